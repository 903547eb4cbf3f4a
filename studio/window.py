"""The PySide6 main window: create panel, embedded viewer, timeline, jobs panel, export.

Widgets only display :class:`studio.model.StudioModel` state and forward actions to it. Errors the
user can cause arrive as :class:`~studio.model.StudioError` and show in a dialog, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QColor, QIcon, QImage, QPainter, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from pipelines.models.vocabulary import describe_vocabulary
from studio.model import (
    CLIP_FPS,
    INPUT_SUFFIXES,
    ExportRequest,
    JobView,
    StudioError,
    StudioModel,
    check_input,
    example_inputs,
)


def to_pixmap(image: np.ndarray, max_side: int = 220) -> QPixmap:
    """A uint8 ``[H, W, 3]`` image as a pixmap at most ``max_side`` pixels wide or tall."""
    image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    h, w = image.shape[:2]
    qimage = QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(qimage).scaled(max_side, max_side, Qt.AspectRatioMode.KeepAspectRatio,
                                            Qt.TransformationMode.SmoothTransformation)


def sparkline(values: list[float], width: int = 220, height: int = 36) -> QPixmap:
    """A loss curve as a small picture (log scale when the values span more than a decade)."""
    pixmap = QPixmap(width, height)
    pixmap.fill(QColor(250, 250, 250))
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if len(data) >= 2:
        if data.min() > 0 and data.max() / data.min() > 10:
            data = np.log10(data)
        lo, hi = float(data.min()), float(data.max())
        span = hi - lo or 1.0
        xs = np.linspace(2, width - 2, len(data))
        ys = height - 3 - (data - lo) / span * (height - 6)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor(40, 110, 200), 1.5))
        painter.drawPolyline(QPolygonF([QPointF(float(x), float(y)) for x, y in zip(xs, ys)]))
        painter.end()
    return pixmap


# ------------------------------------------------------------------------------------------ panels
class CreatePanel(QWidget):
    """Method, prompt, input image, preset, seed and the generate button."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__()
        self.window_ = window
        self.model = window.model
        outer = QVBoxLayout(self)
        form = self.form = QFormLayout()
        outer.addLayout(form)
        outer.addStretch(1)
        self.method = QComboBox()
        # Long method titles must not widen the panel and squeeze the viewer.
        self.method.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method.setMinimumContentsLength(18)
        self.setMaximumWidth(380)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("a red ball bouncing")
        self.prompt.setMaximumHeight(80)
        self.prompt.setToolTip("<b>The bundled prior knows these words</b> (each value, then its synonyms):<br>"
                               + describe_vocabulary().replace("\n", "<br>"))
        # Inline and non-blocking: the prior ignores unknown words, generating still works.
        self.prompt_warning = QLabel()
        self.prompt_warning.setWordWrap(True)
        self.prompt_warning.setStyleSheet("color: #a05a00")
        self.prompt_warning.setVisible(False)
        self.prompt.textChanged.connect(self._check_prompt)
        self.pickers = {kind: InputPicker(window, kind) for kind in INPUT_SUFFIXES}
        self.preset = QComboBox()
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.generate = QPushButton("Generate")
        self.generate.setDefault(True)
        self.generate.clicked.connect(self.window_.generate)
        self.motions = QPushButton("Pick a motion first…")
        self.motions.setToolTip("Draw a few short candidate clips from different seeds, then run the job "
                                "with the motion you pick.")
        self.motions.clicked.connect(self.window_.find_motions)
        form.addRow("Method", self.method)
        form.addRow("Prompt", self.prompt)
        form.addRow("", self.prompt_warning)
        for kind, picker in self.pickers.items():
            form.addRow(kind.capitalize(), picker)
        form.addRow("Preset", self.preset)
        form.addRow("Seed", self.seed)
        self.advanced = QGroupBox("Advanced")
        self.advanced.setCheckable(True)
        self.advanced.setChecked(False)
        self.advanced_form = QFormLayout(self.advanced)
        self.advanced_edits: dict[str, QLineEdit] = {}
        self.advanced.toggled.connect(self._show_advanced)
        form.addRow(self.advanced)
        form.addRow(self.generate)
        form.addRow(self.motions)
        pipelines = self.model.pipelines()
        for info in pipelines:
            self.method.addItem(info.title, info.name)
        if not pipelines:
            self.method.addItem("(no methods installed)")
            self.method.setEnabled(False)
            self.generate.setEnabled(False)
            self.generate.setToolTip("No generation methods are installed in this build; open a saved scene instead.")
        self.method.currentIndexChanged.connect(self._method_changed)
        self.preset.currentTextChanged.connect(self._fill_advanced)
        self.preset.currentTextChanged.connect(self._check_prompt)
        self._method_changed()

    def _method_changed(self) -> None:
        name = self.method.currentData()
        self.preset.clear()
        if not name:
            for picker in self.pickers.values():
                self.form.setRowVisible(picker, False)
            self.form.setRowVisible(self.advanced, False)
            self.form.setRowVisible(self.motions, False)
            return
        self.model.form.pipeline = name
        self.preset.blockSignals(True)
        self.preset.addItems(self.model.presets(name))
        self.preset.blockSignals(False)
        self._fill_advanced()
        inputs = self.model.pipeline_info(name).inputs
        self.prompt.setEnabled("prompt" in inputs)
        for kind, picker in self.pickers.items():
            self.form.setRowVisible(picker, kind in inputs)
        self.form.setRowVisible(self.motions, self.model.motion_kind(name) is not None)
        self._check_prompt()

    def _check_prompt(self, *_) -> None:
        warning = None
        if self.prompt.isEnabled():
            warning = self.model.prompt_warning(self.prompt.toPlainText(), self.method.currentData(),
                                                self.preset.currentText())
        self.prompt_warning.setText(warning or "")
        self.form.setRowVisible(self.prompt_warning, warning is not None)

    def _fill_advanced(self, *_) -> None:
        """One line per config field; empty means the preset's value, shown as the placeholder."""
        while self.advanced_form.rowCount():
            self.advanced_form.removeRow(0)
        self.advanced_edits.clear()
        name = self.method.currentData()
        if not name:
            return
        for key, value, help_text in self.model.advanced_fields(name, self.preset.currentText()):
            edit = QLineEdit()
            edit.setPlaceholderText(str(value))
            edit.setToolTip(help_text or key)
            self.advanced_form.addRow(key, edit)
            self.advanced_edits[key] = edit
        self._show_advanced(self.advanced.isChecked())

    def _show_advanced(self, on: bool) -> None:
        for row in range(self.advanced_form.rowCount()):
            self.advanced_form.setRowVisible(row, on)

    def write_form(self) -> None:
        """Show the model's form in the widgets (after a project opens)."""
        form = self.model.form
        index = self.method.findData(form.pipeline)
        if index >= 0:
            self.method.setCurrentIndex(index)
        self.prompt.setPlainText(form.prompt)
        if self.preset.findText(form.preset) >= 0:
            self.preset.setCurrentText(form.preset)
        self.seed.setValue(int(form.seed))
        for kind, picker in self.pickers.items():
            picker.show_path(form.inputs.get(kind, ""))
        for key, edit in self.advanced_edits.items():
            edit.setText(form.overrides.get(key, ""))

    def read_form(self) -> None:
        """Copy the widgets into the model's form."""
        form = self.model.form
        form.pipeline = self.method.currentData() or ""
        form.prompt = self.prompt.toPlainText()
        form.preset = self.preset.currentText()
        form.seed = self.seed.value()
        for kind, picker in self.pickers.items():
            if picker.path.text():
                form.inputs[kind] = picker.path.text()
        form.overrides = {key: edit.text() for key, edit in self.advanced_edits.items() if edit.text().strip()}


class InputPicker(QWidget):
    """An input file (image or video): path, browse, bundled examples and a thumbnail; files dropped
    on the window land here too."""

    def __init__(self, window: MainWindow, kind: str) -> None:
        super().__init__()
        self.window_ = window
        self.kind = kind
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.path = QLineEdit()
        self.path.setPlaceholderText(f"drop {'an' if kind[0] in 'aeiou' else 'a'} {kind} here or browse")
        self.path.editingFinished.connect(lambda: self.path.text() and self.choose(self.path.text()))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.path)
        row.addWidget(browse)
        column.addLayout(row)
        self.examples = QComboBox()
        self.examples.addItem(f"Example {kind}s…", None)
        for example in example_inputs(kind):
            self.examples.addItem(example.stem.replace("_", " "), str(example))
        self.examples.setVisible(self.examples.count() > 1)
        self.examples.activated.connect(self._example_chosen)
        column.addWidget(self.examples)
        self.thumbnail = QLabel()
        self.thumbnail.setVisible(False)
        column.addWidget(self.thumbnail)

    def _browse(self) -> None:
        patterns = " ".join(f"*{suffix}" for suffix in INPUT_SUFFIXES[self.kind])
        path, _ = QFileDialog.getOpenFileName(self, f"Input {self.kind}", "", f"{self.kind.capitalize()} ({patterns})")
        if path:
            self.choose(path)

    def _example_chosen(self, index: int) -> None:
        path = self.examples.itemData(index)
        if path:
            self.choose(path)

    def show_path(self, path: str) -> None:
        """Show ``path`` (already in the model's form) without an error dialog when it is gone."""
        self.path.setText(path)
        try:
            thumbnail = check_input(self.kind, path) if path else None
        except StudioError:
            thumbnail = None
        if thumbnail is not None:
            self.thumbnail.setPixmap(to_pixmap(thumbnail, 120))
        self.thumbnail.setVisible(thumbnail is not None)

    def choose(self, path: str) -> bool:
        """Use ``path`` after checking it reads; an error dialog (and no change) when it does not."""
        thumbnail = self.window_.guarded(check_input, self.kind, path)
        if thumbnail is None:
            self.path.setText(self.window_.model.form.inputs.get(self.kind, ""))
            return False
        self.path.setText(str(path))
        self.window_.model.form.inputs[self.kind] = str(path)
        self.thumbnail.setPixmap(to_pixmap(thumbnail, 120))
        self.thumbnail.setVisible(True)
        return True


class TimelineBar(QWidget):
    """Play / pause, loop, frame slider, fps and the time readout."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__()
        self.model = window.model
        timeline = self.model.timeline
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 2, 6, 2)
        self.play = QToolButton()
        self.play.setText("▶")
        self.play.setCheckable(True)
        self.play.setToolTip("Play / pause (Space)")
        self.play.toggled.connect(window.set_playing)
        self.loop = QCheckBox("Loop")
        self.loop.setChecked(timeline.loop)
        self.loop.toggled.connect(lambda on: setattr(timeline, "loop", on))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, timeline.frames - 1)
        self.slider.valueChanged.connect(self.model.set_frame)
        self.fps = QDoubleSpinBox()
        self.fps.setRange(1, 120)
        self.fps.setValue(timeline.fps)
        self.fps.setSuffix(" fps")
        self.fps.valueChanged.connect(window.set_fps)
        self.readout = QLabel(timeline.readout())
        self.readout.setMinimumWidth(170)
        for widget in (self.play, self.loop, self.slider, self.fps, self.readout):
            row.addWidget(widget, stretch=1 if widget is self.slider else 0)
        self.model.time_changed.connect(self.refresh)

    def refresh(self, *_) -> None:
        timeline = self.model.timeline
        if self.slider.value() != timeline.frame:
            self.slider.blockSignals(True)
            self.slider.setValue(timeline.frame)
            self.slider.blockSignals(False)
        self.readout.setText(timeline.readout())
        if self.play.isChecked() != timeline.playing:
            self.play.blockSignals(True)
            self.play.setChecked(timeline.playing)
            self.play.blockSignals(False)
        self.play.setText("⏸" if timeline.playing else "▶")


class JobCard(QWidget):
    """One job: title, progress, stage and ETA, live preview, cancel / resume."""

    def __init__(self, window: MainWindow, view: JobView) -> None:
        super().__init__()
        self.view = view
        layout = QVBoxLayout(self)
        self.title = QLabel(view.title)
        self.title.setWordWrap(True)
        self.title.setStyleSheet("font-weight: bold")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.stage = QLabel()
        self.loss = QLabel()
        self.loss.setToolTip("loss")
        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        buttons = QHBoxLayout()
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(lambda: window.guarded(window.model.cancel, self.view))
        self.resume = QPushButton("Resume")
        self.resume.clicked.connect(lambda: window.guarded(window.model.resume, self.view))
        self.show_result = QPushButton("Show")
        self.show_result.clicked.connect(lambda: window.guarded(window.model.open_scene, self.view.scene_path))
        for button in (self.cancel, self.resume, self.show_result):
            buttons.addWidget(button)
        for widget in (self.title, self.progress, self.stage, self.loss, self.preview):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        self._preview_id = None
        self._loss_len = 0
        self.refresh()

    def refresh(self) -> None:
        view = self.view
        self.progress.setValue(int(view.fraction * 1000))
        loss = f"   loss {view.loss_history[-1]:.4g}" if view.loss_history else ""
        self.stage.setText(f"{view.status} · {view.stage}   {view.eta_text()}{loss}".strip())
        if view.preview is not None and id(view.preview) != self._preview_id:
            self._preview_id = id(view.preview)
            self.preview.setPixmap(to_pixmap(view.preview))
        if len(view.loss_history) != self._loss_len:
            self._loss_len = len(view.loss_history)
            self.loss.setPixmap(sparkline(view.loss_history))
        self.loss.setVisible(self._loss_len >= 2)
        self.cancel.setEnabled(not view.finished)
        self.resume.setVisible(view.resumable)
        self.show_result.setEnabled(view.scene_path is not None)


class JobsPanel(QScrollArea):
    def __init__(self, window: MainWindow) -> None:
        super().__init__()
        self.window_ = window
        self.setWidgetResizable(True)
        inner = QWidget()
        self.column = QVBoxLayout(inner)
        self.empty = QLabel("No jobs yet. Generate something from the create panel.")
        self.empty.setWordWrap(True)
        self.column.addWidget(self.empty)
        self.column.addStretch(1)
        self.setWidget(inner)
        self.cards: dict[int, JobCard] = {}
        window.model.jobs_changed.connect(self.refresh)

    def refresh(self) -> None:
        for view in self.window_.model.jobs:
            card = self.cards.get(id(view))
            if card is None:
                card = self.cards[id(view)] = JobCard(self.window_, view)
                self.column.insertWidget(0, card)
            card.refresh()
        self.empty.setVisible(not self.cards)


class LibraryPanel(QWidget):
    """Past runs with thumbnails; double-click opens a run's scene, Resume continues an interrupted one."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__()
        self.window_ = window
        column = QVBoxLayout(self)
        self.list = QListWidget()
        self.list.setIconSize(QPixmap(96, 96).size())
        self.list.itemDoubleClicked.connect(self._open)
        buttons = QHBoxLayout()
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.resume = QPushButton("Resume")
        self.resume.clicked.connect(self._resume)
        buttons.addWidget(refresh)
        buttons.addWidget(self.resume)
        column.addWidget(self.list)
        column.addLayout(buttons)
        self.runs: list = []
        self._finished = 0
        window.model.jobs_changed.connect(self._jobs_changed)
        window.model.library_changed.connect(self._show_runs)
        self.refresh()

    def _jobs_changed(self) -> None:
        finished = sum(view.finished for view in self.window_.model.jobs)
        if finished != self._finished:
            self._finished = finished
            self.refresh()

    def refresh(self) -> None:
        """Scan the run folders again, in the background: the list fills in at a later poll."""
        self.window_.model.refresh_library()

    def _show_runs(self) -> None:
        model = self.window_.model
        self.runs = list(model.library_runs)
        self.list.clear()
        for run in self.runs:
            spec = run.spec
            title = spec.inputs.get("prompt", spec.pipeline) if spec is not None else run.run_dir.name
            item = QListWidgetItem(f"{title}\n{run.status} · {run.run_dir.name}")
            thumbnail = model.library_thumbnails.get(run.run_dir)
            if thumbnail is not None:
                item.setIcon(QIcon(to_pixmap(thumbnail, 96)))
            self.list.addItem(item)

    def _selected(self):
        row = self.list.currentRow()
        return self.runs[row] if 0 <= row < len(self.runs) else None

    def _open(self, *_) -> None:
        run = self._selected()
        if run is not None:
            self.window_.guarded(self.window_.model.open_run, run)

    def _resume(self) -> None:
        run = self._selected()
        if run is not None:
            self.window_.guarded(self.window_.model.resume_run, run.run_dir)


class ExportDialog(QDialog):
    """Format, time, frame count, resolution and output path; exports in the background with a busy
    bar, then offers to open the folder."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window_ = window
        self.setWindowTitle("Export")
        self.setMinimumWidth(480)
        model = window.model
        form = QFormLayout(self)
        self.format = QComboBox()
        self.format.addItems(model.export_formats())
        self.t = QDoubleSpinBox()
        self.t.setRange(*model.timeline.time_range)
        self.t.setDecimals(3)
        self.t.setSingleStep(0.05)
        self.t.setValue(model.timeline.t)
        self.frames = QSpinBox()
        self.frames.setRange(1, 1000)
        self.frames.setValue(24)
        self.resolution = QSpinBox()
        self.resolution.setRange(16, 1024)
        self.resolution.setValue(128)
        self.path = QLineEdit(str(Path.cwd() / "export.glb"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path)
        path_row.addWidget(browse)
        self.overwrite = QCheckBox("Replace an existing file")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start)
        self.open_folder = QPushButton("Open folder")
        self.open_folder.setEnabled(False)
        self.open_folder.clicked.connect(self._open_folder)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        for button in (self.export_button, self.open_folder, close):
            buttons.addWidget(button)
        self.format.currentTextChanged.connect(self._format_changed)
        for label, widget in (("Format", self.format), ("Time", self.t), ("Frames", self.frames),
                              ("Resolution", self.resolution)):
            form.addRow(label, widget)
        form.addRow("Output", path_row)
        form.addRow(self.overwrite)
        form.addRow(self.progress)
        form.addRow(self.status)
        form.addRow(buttons)
        self._thread = None
        self._result: tuple[Path | None, str | None] | None = None
        self.written: Path | None = None
        self._poll = QTimer(self)
        self._poll.setInterval(50)
        self._poll.timeout.connect(self._check_done)
        self._format_changed(self.format.currentText())

    def _format_changed(self, fmt: str) -> None:
        from studio.model import EXPORT_OPTIONS, EXPORT_SUFFIX

        applies = EXPORT_OPTIONS.get(fmt, ("t", "frames", "resolution"))
        self.t.setEnabled("t" in applies)
        self.frames.setEnabled("frames" in applies)
        self.resolution.setEnabled("resolution" in applies)
        path = Path(self.path.text())
        stem = path.with_suffix("") if path.suffix else path
        self.path.setText(str(stem.with_suffix(EXPORT_SUFFIX[fmt]) if fmt in EXPORT_SUFFIX else stem))

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export to", self.path.text())
        if path:
            self.path.setText(path)

    def request(self) -> ExportRequest:
        model = self.window_.model
        return ExportRequest(path=Path(self.path.text()).expanduser(), format=self.format.currentText(),
                             t=self.t.value(), frames=self.frames.value(), resolution=self.resolution.value(),
                             time_range=model.timeline.time_range, overwrite=self.overwrite.isChecked())

    def start(self) -> None:
        """Export on a background thread so the window (and running jobs) stay responsive."""
        import threading

        request = self.request()
        self._result = None
        self.export_button.setEnabled(False)
        self.open_folder.setEnabled(False)
        self.progress.setRange(0, 0)  # busy
        self.status.setText(f"Exporting {request.format} to {request.path} …")

        def work():
            try:
                self._result = (self.window_.model.export(request), None)
            except StudioError as err:
                self._result = (None, str(err))

        self._thread = threading.Thread(target=work, name="export", daemon=True)
        self._thread.start()
        self._poll.start()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _check_done(self) -> None:
        if self.busy or self._result is None:
            return
        self._poll.stop()
        written, error = self._result
        self.progress.setRange(0, 1)
        self.export_button.setEnabled(True)
        if error is not None:
            self.progress.setValue(0)
            self.status.setText(error)
            self.window_.show_error(error)
            return
        self.progress.setValue(1)
        self.written = written
        self.status.setText(f"Wrote {written}")
        self.open_folder.setEnabled(True)
        self.window_.statusBar().showMessage(f"Exported {written}", 10_000)

    def _open_folder(self) -> None:
        from PySide6.QtGui import QDesktopServices

        if self.written is not None:
            folder = self.written if self.written.is_dir() else self.written.parent
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def reject(self) -> None:
        if not self.busy:  # an export in flight finishes; files are written whole or not at all
            super().reject()


class MotionGallery(QDialog):
    """Candidate motions as looping clips, filled in as the model draws them; "Use this motion" starts the
    full job with that clip's seed."""

    COLUMNS = 2

    def __init__(self, window: MainWindow, search) -> None:
        super().__init__(window)
        self.window_ = window
        self.search = search
        self.setWindowTitle("Pick a motion")
        column = QVBoxLayout(self)
        self.status = QLabel()
        self.status.setWordWrap(True)
        column.addWidget(self.status)
        grid_widget = QWidget()
        self.grid = QGridLayout(grid_widget)
        column.addWidget(grid_widget)
        buttons = QHBoxLayout()
        self.stop = QPushButton("Stop")
        self.stop.clicked.connect(search.cancel)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        buttons.addStretch(1)
        buttons.addWidget(self.stop)
        buttons.addWidget(close)
        column.addLayout(buttons)
        #: One (clip label, frames as pixmaps, pick button) per candidate shown.
        self.cards: list[tuple[QLabel, list[QPixmap], QPushButton]] = []
        self._frame = 0
        self._timer = QTimer(self)
        self._timer.setInterval(round(1000 / CLIP_FPS))
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        self._tick()

    def _tick(self) -> None:
        search = self.search
        search.poll()
        for candidate in search.candidates[len(self.cards):]:
            self._add_card(candidate)
        self._frame += 1
        for label, frames, _ in self.cards:
            label.setPixmap(frames[self._frame % len(frames)])
        self.status.setText(search.status_text())
        self.stop.setEnabled(search.status == "running")

    def _add_card(self, candidate) -> None:
        card = QWidget()
        layout = QVBoxLayout(card)
        clip = QLabel()
        clip.setAlignment(Qt.AlignmentFlag.AlignCenter)
        frames = [to_pixmap(frame, 160) for frame in candidate.clip]
        clip.setPixmap(frames[0])
        caption = QLabel(f"seed {candidate.seed} · {len(frames)} frames")
        caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        pick = QPushButton("Use this motion")
        pick.clicked.connect(lambda _=False, seed=candidate.seed: self.pick(seed))
        for widget in (clip, caption, pick):
            layout.addWidget(widget)
        index = len(self.cards)
        self.grid.addWidget(card, index // self.COLUMNS, index % self.COLUMNS)
        self.cards.append((clip, frames, pick))

    def pick(self, seed: int) -> None:
        if self.window_.pick_motion(seed, self.search) is not None:
            self.accept()

    def done(self, result: int) -> None:
        self._timer.stop()
        self.search.cancel()  # nothing more to draw once the gallery is gone
        super().done(result)


# ------------------------------------------------------------------------------------------ window
class MainWindow(QMainWindow):
    def __init__(self, model: StudioModel, viewer_url: str | None, hide_browser_notices: bool = False) -> None:
        super().__init__()
        self.model = model
        self.hide_browser_notices = hide_browser_notices
        self.setWindowTitle("fourd studio")
        self.resize(1400, 860)
        self.setAcceptDrops(True)
        self.error_box: QMessageBox | None = None
        #: Sentences shown in error dialogs, most recent last (the tests read it).
        self.errors: list[str] = []
        #: Ask what to do with running jobs on close (scripts that manage jobs themselves turn it off).
        self.confirm_on_close = True

        self.view = self._make_view(viewer_url)
        self.timeline_bar = TimelineBar(self)
        centre = QWidget()
        column = QVBoxLayout(centre)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.view, stretch=1)
        column.addWidget(self.timeline_bar)
        self.setCentralWidget(centre)

        self.create_panel = CreatePanel(self)
        self.jobs_panel = JobsPanel(self)
        self.library_panel = LibraryPanel(self)
        self.docks: dict[str, QDockWidget] = {}
        for title, widget, area in (("Create", self.create_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
                                    ("Jobs", self.jobs_panel, Qt.DockWidgetArea.RightDockWidgetArea),
                                    ("Library", self.library_panel, Qt.DockWidgetArea.RightDockWidgetArea)):
            dock = self.docks[title] = QDockWidget(title, self)
            dock.setObjectName(title)
            dock.setWidget(widget)
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                             | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
            self.addDockWidget(area, dock)
        self.tabifyDockWidget(self.docks["Jobs"], self.docks["Library"])
        self.docks["Jobs"].raise_()
        self._make_toolbar()
        self._make_menus()

        self.poll_timer = QTimer(self)
        self.poll_timer.setInterval(100)
        self.poll_timer.timeout.connect(lambda: self.guarded(model.poll_jobs))
        self.poll_timer.start()
        self.play_timer = QTimer(self)
        self.play_timer.timeout.connect(model.tick)
        self.set_fps(model.timeline.fps)
        model.scene_changed.connect(self._scene_changed)
        model.project_changed.connect(self._project_changed)
        self._project_changed()
        #: What the scene in the viewer is (for the first-start example: how it was made), always in view.
        self.scene_caption = QLabel()
        self.scene_caption.setStyleSheet("color: #555; padding-right: 6px")
        self.statusBar().addPermanentWidget(self.scene_caption)
        self._scene_changed(model.scene)
        self.statusBar().showMessage("Ready")

    def _make_view(self, url: str | None) -> QWidget:
        if url is None:
            return QLabel("No viewer.")
        from PySide6.QtWebEngineWidgets import QWebEngineView

        view = QWebEngineView()
        # Below about 640 px viser switches to its mobile layout (a bottom sheet over the scene).
        view.setMinimumSize(640, 400)
        if self.hide_browser_notices:
            from PySide6.QtWebEngineCore import QWebEngineScript

            # viser warns about software WebGL in a toast; the studio chose software GL on purpose.
            script = QWebEngineScript()
            script.setName("hide-notices")
            script.setInjectionPoint(QWebEngineScript.InjectionPoint.DocumentReady)
            script.setWorldId(QWebEngineScript.ScriptWorldId.ApplicationWorld)
            script.setSourceCode("const s = document.createElement('style');"
                                 "s.textContent = '.mantine-Notifications-root { display: none !important; }';"
                                 "document.head.appendChild(s);")
            view.page().scripts().insert(script)
        view.load(QUrl(url))
        return view

    def _make_toolbar(self) -> None:
        bar = self.addToolBar("Main")
        bar.setObjectName("main-toolbar")
        open_action = QAction("Open scene…", self)
        open_action.triggered.connect(self._open_scene_dialog)
        bar.addAction(open_action)
        self.export_action = QAction("Export…", self)
        self.export_action.triggered.connect(self.export)
        bar.addAction(self.export_action)
        bar.addSeparator()
        self.camera_actions: dict[str, QAction] = {}
        for preset in ("front", "side", "top", "turntable", "reset"):
            action = self.camera_actions[preset] = QAction(preset.capitalize(), self)
            action.setToolTip("Camera: orbit the object until another view is chosen" if preset == "turntable"
                              else f"Camera: {preset} view")
            action.setCheckable(preset == "turntable")
            action.triggered.connect(lambda _=False, p=preset: self.set_camera(p))
            bar.addAction(action)
        self._update_export_action()

    def _make_menus(self) -> None:
        menu = self.menuBar().addMenu("&File")
        self.file_actions: dict[str, QAction] = {}
        for key, text, shortcut, slot in (
                ("new", "&New project", "Ctrl+N", self.new_project),
                ("open", "&Open project…", "Ctrl+O", self._open_project_dialog),
                ("save", "&Save project", "Ctrl+S", self.save_project),
                ("save_as", "Save project &as…", "Ctrl+Shift+S", self.save_project_as)):
            action = self.file_actions[key] = QAction(text, self)
            action.setShortcut(shortcut)
            action.triggered.connect(lambda _=False, f=slot: f())
            menu.addAction(action)
        self.recent_menu = menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self._fill_recent_menu()
        menu.addSeparator()
        open_scene = menu.addAction("Open &scene…")
        open_scene.triggered.connect(self._open_scene_dialog)
        menu.addAction(self.export_action)
        menu.addSeparator()
        quit_action = menu.addAction("&Quit")
        quit_action.setShortcut("Ctrl+Q")
        quit_action.triggered.connect(self.close)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.model.recent_projects()
        for folder in recent:
            action = self.recent_menu.addAction(folder.name)
            action.setToolTip(str(folder))
            action.setData(str(folder))
            action.triggered.connect(lambda _=False, f=str(folder): self.open_project(f))
        if not recent:
            self.recent_menu.addAction("(none yet)").setEnabled(False)

    def _update_export_action(self) -> None:
        available = self.model.export_available()
        self.export_action.setEnabled(available and self.model.scene is not None)
        if not available:
            self.export_action.setToolTip("Exporting is not available in this build (renderers.export is missing).")
        elif self.model.scene is None:
            self.export_action.setToolTip("Generate or open a scene to export it.")
        else:
            self.export_action.setToolTip("Export the current scene.")

    # ------------------------------------------------------------ actions
    def guarded(self, action, *args):
        """Run a model action; a StudioError becomes an error dialog."""
        try:
            return action(*args)
        except StudioError as err:
            self.show_error(str(err))
            return None

    def show_error(self, message: str) -> None:
        self.errors.append(message)
        self.statusBar().showMessage(message, 10_000)
        box = QMessageBox(QMessageBox.Icon.Warning, "fourd studio", message, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()  # not exec(): the event loop (jobs, viewer) keeps running
        self.error_box = box

    def generate(self) -> None:
        self.create_panel.read_form()
        view = self.guarded(self.model.generate)
        if view is not None:
            self.statusBar().showMessage(f"Started {view.title}", 5000)

    def find_motions(self) -> MotionGallery | None:
        """Draw candidate motions for the form's job and show them in a gallery (non-modal)."""
        self.create_panel.read_form()
        search = self.guarded(self.model.find_motions)
        if search is None:
            return None
        gallery = self.motion_gallery = MotionGallery(self, search)
        gallery.open()
        return gallery

    def pick_motion(self, seed: int, search=None) -> JobView | None:
        """Run the job the candidates of ``search`` (the latest when None) were drawn for, with motion ``seed``."""
        view = self.guarded(self.model.pick_motion, seed, search)
        if view is not None:
            self.create_panel.write_form()  # the advanced motion_seed field now holds the pick
            self.statusBar().showMessage(f"Started {view.title} with motion seed {seed}", 5000)
        return view

    def set_input_image(self, path: str) -> bool:
        """Use ``path`` as the input image after checking it reads as a picture."""
        return self.create_panel.pickers["image"].choose(path)

    def set_input_file(self, path: str) -> bool:
        """A dropped file: a video or an image input, by its suffix."""
        suffix = Path(path).suffix.lower()
        kind = next((k for k, suffixes in INPUT_SUFFIXES.items() if suffix in suffixes), "image")
        return self.create_panel.pickers[kind].choose(path)

    def open_scene(self, directory: str) -> bool:
        """Load a saved scene folder into the viewer; False (and an error dialog) when it cannot."""
        try:
            self.model.open_scene(directory)
        except StudioError as err:
            self.show_error(str(err))
            return False
        return True

    # ------------------------------------------------------------ projects
    def new_project(self) -> None:
        self.model.new_project()
        self.create_panel.write_form()

    def open_project(self, folder: str) -> bool:
        """Open a project folder; False (and an error dialog) when it is not a readable project."""
        try:
            notes = self.model.open_project(folder)
        except StudioError as err:
            self.show_error(str(err))
            return False
        self.create_panel.write_form()
        if notes:
            self.show_error(" ".join(notes))
        else:
            self.statusBar().showMessage(f"Opened project {self.model.project_folder}", 5000)
        return True

    def save_project(self) -> bool:
        """Save into the open project's folder, or ask for one when the project is new."""
        if self.model.project_folder is None:
            return self.save_project_as()
        return self._save_into(self.model.project_folder)

    def save_project_as(self, folder: str | None = None) -> bool:
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save the project into a folder")
            if not folder:
                return False
        return self._save_into(folder)

    def _save_into(self, folder) -> bool:
        self.create_panel.read_form()
        saved = self.guarded(self.model.save_project, folder)
        if saved is None:
            return False
        self.create_panel.write_form()  # inputs now point at the project's copies
        self.statusBar().showMessage(f"Saved project {saved}", 5000)
        return True

    def _open_project_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a project folder")
        if folder:
            self.open_project(folder)

    def _project_changed(self) -> None:
        folder = self.model.project_folder
        self.setWindowTitle(f"{folder.name} — fourd studio" if folder is not None else "fourd studio")
        timeline, bar = self.model.timeline, self.timeline_bar
        for widget in (bar.loop, bar.fps, bar.slider):
            widget.blockSignals(True)
        bar.loop.setChecked(timeline.loop)
        bar.fps.setValue(timeline.fps)
        bar.slider.setRange(0, timeline.frames - 1)
        for widget in (bar.loop, bar.fps, bar.slider):
            widget.blockSignals(False)
        self.set_fps(timeline.fps)
        self.camera_actions["turntable"].setChecked(self.model.camera == "turntable")
        bar.refresh()
        self.library_panel.refresh()  # the project's runs join the library

    def set_camera(self, preset: str) -> None:
        """A camera preset; the turntable button toggles the orbit off again (back to the default view)."""
        if preset == "turntable" and self.model.camera == "turntable":
            preset = "reset"
        self.guarded(self.model.set_camera, preset)
        self.camera_actions["turntable"].setChecked(self.model.camera == "turntable")

    def _open_scene_dialog(self) -> None:
        directory = QFileDialog.getExistingDirectory(self, "Open a saved scene folder")
        if directory:
            self.open_scene(directory)

    def export(self) -> ExportDialog:
        """Open the export dialog (non-modal for the event loop; modal for the user)."""
        dialog = ExportDialog(self)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.open()
        self.export_dialog = dialog
        return dialog

    def set_playing(self, playing: bool) -> None:
        self.model.set_playing(playing)
        self.timeline_bar.refresh()

    def set_fps(self, fps: float) -> None:
        self.model.timeline.fps = fps
        self.play_timer.setInterval(max(1, int(round(1000 / fps))))
        if not self.play_timer.isActive():
            self.play_timer.start()

    def _scene_changed(self, scene) -> None:
        self._update_export_action()
        self.timeline_bar.refresh()
        self.scene_caption.setText(self.model.scene_caption if scene is not None else "")
        if scene is not None:
            self.statusBar().showMessage(f"Showing {self.model.scene_label}", 5000)

    def confirm_close(self) -> bool:
        """Ask what the model says closing needs (save the project? cancel or keep running jobs?) and pass
        the answers back to it; False keeps the window open."""
        self.create_panel.read_form()
        questions = self.model.close_questions()
        if questions.unsaved:
            answer = self.ask_save_changes()
            if answer == "cancel" or (answer == "save" and not self.save_project()):
                return False
        if questions.running:
            answer = self.ask_running_jobs(questions.running)
            if answer == "cancel":
                return False
            self.model.decide_running_jobs(keep=answer == "keep")
        return True

    def ask_save_changes(self) -> str:
        """``save``, ``discard`` or ``cancel`` (stay open)."""
        folder = self.model.project_folder
        box = QMessageBox(QMessageBox.Icon.Question, "fourd studio",
                          f"Save the changes to the project {folder.name!r}?" if folder is not None
                          else "Save this project before closing?", parent=self)
        box.setInformativeText("Its runs, inputs and view settings are kept in a project folder.")
        save = box.addButton(QMessageBox.StandardButton.Save)
        discard = box.addButton(QMessageBox.StandardButton.Discard)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(save)
        box.exec()
        return {id(save): "save", id(discard): "discard"}.get(id(box.clickedButton()), "cancel")

    def ask_running_jobs(self, running: int) -> str:
        """``stop`` (cancel with a checkpoint), ``keep`` (running in the background) or ``cancel`` (stay open)."""
        box = QMessageBox(QMessageBox.Icon.Question, "fourd studio",
                          f"{running} job{'s are' if running > 1 else ' is'} still running.", parent=self)
        box.setInformativeText("Cancel them (they can resume later from their last checkpoint) "
                               "or keep them running in the background (the studio exits when they finish)?")
        stop = box.addButton("Cancel jobs", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Keep running", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(keep)
        box.exec()
        return {id(stop): "stop", id(keep): "keep"}.get(id(box.clickedButton()), "cancel")

    # ------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt API)
        for url in event.mimeData().urls():
            path = Path(url.toLocalFile())
            if path.is_dir():
                self.open_scene(str(path))
            else:
                self.set_input_file(str(path))

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if event.key() == Qt.Key.Key_Space:
            self.timeline_bar.play.toggle()
        else:
            super().keyPressEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if self.confirm_on_close and not self.confirm_close():
            event.ignore()
            return
        self.poll_timer.stop()
        self.play_timer.stop()
        # The page must go before Qt releases the web profile at exit, or Chromium complains.
        if hasattr(self.view, "page"):
            self.view.page().deleteLater()
        super().closeEvent(event)

"""Browser mode: the viewer plus the studio's controls as viser GUI, for a browser (e.g. over an SSH tunnel).

The same :class:`~studio.model.StudioModel` as the desktop window; viser callbacks run on viser's
threads, so every model call here holds one lock, shared with the main loop that polls jobs and
plays the timeline.
"""

from __future__ import annotations

import threading
import time

from studio.model import CLIP_FPS, StudioError, StudioModel, example_inputs
from studio.viewer import CAMERA_PRESET_NAMES, Viewer


class MotionCard:
    """One candidate motion in the browser's gallery: its clip (a GUI image that loops), and its pick button."""

    #: The browser shows a GUI image at its own size: small clips are enlarged (whole pixels) to about this.
    SIDE = 160

    def __init__(self, gui, candidate) -> None:
        self.candidate = candidate
        clip = candidate.clip
        scale = max(1, self.SIDE // max(clip.shape[1:3]))
        self.frames = clip.repeat(scale, axis=1).repeat(scale, axis=2)
        self.frame = 0
        self.image = gui.add_image(self.frames[0], label=f"seed {candidate.seed} · {len(clip)} frames", format="png")
        self.pick = gui.add_button("Use this motion", hint=f"Run the full job with motion seed {candidate.seed}")

    def show_frame(self, frame: int) -> None:
        frame %= len(self.frames)
        if frame != self.frame:
            self.frame = frame
            self.image.image = self.frames[frame]

    def remove(self) -> None:
        self.image.remove()
        self.pick.remove()


class BrowserControls:
    """Timeline, camera presets, create form, motion picking and job status as viser GUI elements."""

    def __init__(self, model: StudioModel, viewer: Viewer) -> None:
        self.model = model
        self.viewer = viewer
        self.lock = threading.RLock()
        #: Every sentence shown as a notification, most recent last (the tests read it).
        self.notes: list[str] = []
        gui = viewer.server.gui
        timeline = model.timeline

        # What the scene in view is (for the first-start example: how it was made).
        self.caption = gui.add_markdown(self._caption_text())
        with gui.add_folder("Timeline"):
            self.play = gui.add_checkbox("Play", initial_value=timeline.playing)
            self.loop = gui.add_checkbox("Loop", initial_value=timeline.loop)
            self.frame = gui.add_slider("Frame", min=0, max=timeline.frames - 1, step=1, initial_value=timeline.frame)
            self.fps = gui.add_number("FPS", initial_value=timeline.fps, min=1, max=120, step=1)
            self.readout = gui.add_markdown(timeline.readout())
        with gui.add_folder("Camera"):
            self.camera = gui.add_button_group("View", [name.capitalize() for name in CAMERA_PRESET_NAMES])
        with gui.add_folder("Create"):
            pipelines = model.pipelines()
            names = [p.name for p in pipelines] or ["(no methods installed)"]
            form = model.form  # the first-start example when nothing else was opened
            method = form.pipeline if form.pipeline in names else names[0]
            self.method = gui.add_dropdown("Method", names, initial_value=method)
            self.prompt = gui.add_text("Prompt", initial_value=form.prompt)
            # Paths on the studio's machine, as the project folder below; the bundled examples fill it in.
            self.image = gui.add_text("Image", initial_value=form.inputs.get("image", ""),
                                      hint="an image file on the studio's machine")
            examples = {path.stem.replace("_", " "): str(path) for path in example_inputs("image")}
            self.examples = gui.add_dropdown("Example", [self.NO_EXAMPLE, *examples], initial_value=self.NO_EXAMPLE)
            self._example_paths = examples
            presets = model.presets(method) or ["preview"]
            preset = form.preset if form.preset in presets else presets[0]
            self.preset = gui.add_dropdown("Preset", presets, initial_value=preset)
            self.seed = gui.add_number("Seed", initial_value=int(form.seed), min=0, max=2**31 - 1, step=1)
            self.generate = gui.add_button("Generate", disabled=not pipelines)
            self.find_motions = gui.add_button("Pick a motion first…",
                                               hint="Draw a few short candidate clips from different seeds, then "
                                                    "run the job with the motion you pick.")
            self.jobs = gui.add_markdown("No jobs yet.")
        # The gallery: filled as candidates arrive (step), emptied by a pick or a new search.
        self.motions_folder = gui.add_folder("Motions", visible=False)
        with self.motions_folder:
            self.motion_status = gui.add_markdown("")
            self.stop_motions = gui.add_button("Stop", disabled=True)
        self.search = None
        self.cards: list[MotionCard] = []
        with gui.add_folder("Project", expand_by_default=False):
            # Folders are on the machine the studio runs on (the remote GPU box), typed as paths.
            self.project_folder = gui.add_text("Folder", initial_value=str(model.project_folder or ""),
                                               hint="a folder on the studio's machine")
            self.save_project = gui.add_button("Save")
            self.open_project = gui.add_button("Open")
            self.new_project = gui.add_button("New")
            self.recent = gui.add_dropdown("Recent", self._recent_names(), initial_value=self._recent_names()[0])
            self.project_status = gui.add_markdown(self._project_text())

        self.play.on_update(lambda _: self._locked(model.set_playing, self.play.value))
        self.loop.on_update(lambda _: setattr(timeline, "loop", self.loop.value))
        self.frame.on_update(lambda _: self._locked(self._frame_moved))
        self.fps.on_update(lambda _: setattr(timeline, "fps", float(self.fps.value)))
        self.camera.on_click(lambda _: model.set_camera(self.camera.value.lower()))
        self.method.on_update(lambda _: self._method_changed())
        self.generate.on_click(lambda event: self._locked(self._generate, event.client))
        self.examples.on_update(lambda _: self._locked(self._example_chosen))
        self.find_motions.on_click(lambda event: self._locked(self._find_motions, event.client))
        self.stop_motions.on_click(lambda _: self._locked(self._stop_motions))
        self.save_project.on_click(lambda event: self._locked(self._save_project, event.client))
        self.open_project.on_click(lambda event: self._locked(self._open_project, event.client))
        self.new_project.on_click(lambda event: self._locked(self._new_project, event.client))
        self.recent.on_update(lambda _: self._locked(self._recent_chosen))
        model.time_changed.connect(self._time_changed)
        model.jobs_changed.connect(self._jobs_changed)
        model.project_changed.connect(self._project_changed)
        model.scene_changed.connect(lambda _scene: setattr(self.caption, "content", self._caption_text()))
        self._show_method_fields()

    def _caption_text(self) -> str:
        return f"*{self.model.scene_caption}*" if self.model.scene is not None else ""

    def _locked(self, action, *args):
        with self.lock:
            return action(*args)

    def _frame_moved(self) -> None:
        if int(self.frame.value) != self.model.timeline.frame:
            self.model.set_frame(int(self.frame.value))

    def _time_changed(self, _t: float) -> None:
        timeline = self.model.timeline
        if int(self.frame.value) != timeline.frame:
            self.frame.value = timeline.frame
        self.readout.content = timeline.readout()
        if self.play.value != timeline.playing:
            self.play.value = timeline.playing

    def _method_changed(self) -> None:
        presets = self.model.presets(self.method.value)
        if presets:
            self.preset.options = presets
            self.preset.value = presets[0]
        self._show_method_fields()

    def _show_method_fields(self) -> None:
        """The fields the chosen method takes: the prompt, an input image, and motion picking (Diffusion²)."""
        try:
            inputs = self.model.pipeline_info(self.method.value).inputs
        except StudioError:
            inputs = ()
        self.prompt.disabled = "prompt" not in inputs
        self.image.visible = self.examples.visible = "image" in inputs
        self.find_motions.visible = self.model.motion_kind(self.method.value) is not None

    def _example_chosen(self) -> None:
        if self.examples.value in self._example_paths:
            self.image.value = self._example_paths[self.examples.value]

    def _read_form(self) -> None:
        form = self.model.form
        if self.method.value in [p.name for p in self.model.pipelines()]:
            form.pipeline = self.method.value
        form.prompt, form.preset, form.seed = self.prompt.value, self.preset.value, int(self.seed.value)
        if self.image.value.strip():
            form.inputs["image"] = self.image.value.strip()

    def _write_form(self) -> None:
        """Show the model's form and playback settings in the GUI (after a project opens)."""
        form, timeline = self.model.form, self.model.timeline
        if form.pipeline in self.method.options:
            self.method.value = form.pipeline
            self._method_changed()
        self.prompt.value = form.prompt
        self.image.value = form.inputs.get("image", "")
        if form.preset in self.preset.options:
            self.preset.value = form.preset
        self.seed.value = int(form.seed)
        self.loop.value, self.fps.value = timeline.loop, timeline.fps
        self.frame.max = timeline.frames - 1
        self.frame.value = timeline.frame

    def _generate(self, client) -> None:
        self._read_form()
        try:
            self.model.generate()
        except StudioError as err:
            self.notify(str(err), client)

    # ------------------------------------------------------------ motion picking
    NO_EXAMPLE = "(example images)"

    def _find_motions(self, client) -> None:
        """Draw candidate motions for the form's job (the model's search, on its own thread); the gallery
        fills in as they arrive."""
        self._read_form()
        try:
            search = self.model.find_motions()
        except StudioError as err:
            self.notify(str(err), client)
            return
        self._clear_gallery()
        self.search = search
        self.motions_folder.visible = True
        self._update_gallery()

    def _update_gallery(self) -> None:
        search = self.search
        if search is None:
            return
        search.poll()
        with self.motions_folder:
            for candidate in search.candidates[len(self.cards):]:
                card = MotionCard(self.viewer.server.gui, candidate)
                card.pick.on_click(lambda event, seed=candidate.seed: self._locked(self._pick_motion, seed,
                                                                                   event.client))
                self.cards.append(card)
        frame = int(time.monotonic() * CLIP_FPS)
        for card in self.cards:
            card.show_frame(frame)
        self.motion_status.content = search.status_text()
        self.stop_motions.disabled = search.finished

    def _pick_motion(self, seed: int, client) -> None:
        """Run the job the shown candidates were drawn for with motion ``seed``; the gallery closes."""
        try:
            view = self.model.pick_motion(seed, self.search)
        except StudioError as err:
            self.notify(str(err), client)
            return
        self._clear_gallery()
        self.notify(f"Started {view.title} with motion seed {seed}.", client, error=False)

    def _stop_motions(self) -> None:
        if self.search is not None:
            self.search.cancel()

    def _clear_gallery(self) -> None:
        if self.search is not None:
            self.search.cancel()  # nothing more to draw once its gallery is gone
        for card in self.cards:
            card.remove()
        self.cards, self.search = [], None
        self.motions_folder.visible = False

    # ------------------------------------------------------------ projects
    NO_RECENT = "(no recent projects)"

    def _recent_names(self) -> list[str]:
        return [str(p) for p in self.model.recent_projects()] or [self.NO_RECENT]

    def _project_text(self) -> str:
        folder = self.model.project_folder
        return f"Project: **{folder.name}**" if folder is not None else "Unsaved project."

    def _save_project(self, client) -> None:
        self._read_form()
        folder = self.project_folder.value.strip() or None
        try:
            saved = self.model.save_project(folder)
        except StudioError as err:
            self.notify(str(err), client)
            return
        self.project_folder.value = str(saved)
        self.notify(f"Saved the project into {saved}.", client, error=False)

    def _open_project(self, client) -> None:
        folder = self.project_folder.value.strip()
        if not folder:
            self.notify("Type the project's folder first.", client)
            return
        try:
            notes = self.model.open_project(folder)
        except StudioError as err:
            self.notify(str(err), client)
            return
        if notes:
            self.notify(" ".join(notes), client)

    def _new_project(self, _client) -> None:
        self.model.new_project()
        self.project_folder.value = ""

    def _recent_chosen(self) -> None:
        if self.recent.value != self.NO_RECENT:
            self.project_folder.value = self.recent.value

    def _project_changed(self) -> None:
        self._write_form()
        if self.model.project_folder is not None:
            self.project_folder.value = str(self.model.project_folder)
        names = self._recent_names()
        self.recent.options = names
        self.project_status.content = self._project_text()

    def notify(self, message: str, client=None, error: bool = True) -> None:
        """Show a sentence in the browser (one client, or all): an error in red, else a note."""
        clients = [client] if client is not None else list(self.viewer.server.get_clients().values())
        for c in clients:
            c.add_notification("fourd studio", message, color="red" if error else "green", auto_close_seconds=10.0)
        self.notes.append(message)

    def _jobs_changed(self) -> None:
        lines = []
        for view in reversed(self.model.jobs):
            lines.append(f"**{view.title}**  \n{view.status} · {view.stage} · {view.fraction:.0%} {view.eta_text()}")
        self.jobs.content = "\n\n".join(lines) or "No jobs yet."

    def step(self) -> None:
        """One round of the main loop: poll jobs and advance playback."""
        with self.lock:
            try:
                self.model.poll_jobs()
            except StudioError as err:
                self.notify(str(err))
            self.model.tick()
            self._update_gallery()


def serve(model: StudioModel, viewer: Viewer, stop: threading.Event | None = None) -> None:
    """Run browser mode until ``stop`` is set (or Ctrl-C)."""
    controls = BrowserControls(model, viewer)
    stop = stop or threading.Event()
    try:
        while not stop.is_set():
            controls.step()
            stop.wait(1.0 / max(1.0, model.timeline.fps))
    except KeyboardInterrupt:
        pass

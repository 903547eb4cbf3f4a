"""`fourd-studio`: the desktop window, or browser mode when asked for or when there is no display."""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fourd-studio", description="Generate, view and export 4D assets.")
    parser.add_argument("--browser", action="store_true",
                        help="serve the viewer and controls to a web browser instead of opening a window "
                             "(the default when no display is found)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface the viewer binds to (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=None, help="viewer port (default: a free one)")
    parser.add_argument("--scene", default=None, help="a saved scene folder to open at start")
    return parser.parse_args(argv)


def initial_scene(model, directory: str | None) -> str:
    """Open ``directory``, else the ready example (a prompt for the bundled prior in the create form and
    the result that job gave, see :mod:`studio.first_start`), so the viewer never starts empty. The
    viewer's caption."""
    if directory:
        model.open_scene(directory)
        model.mark_saved()
        return model.scene_caption
    from studio.first_start import apply

    return apply(model)


def run_browser(args: argparse.Namespace) -> int:
    from studio.browser import serve
    from studio.model import StudioModel
    from studio.viewer import Viewer

    viewer = Viewer(host=args.host, port=args.port)
    model = StudioModel(viewer=viewer)
    try:
        initial_scene(model, args.scene)
        print(f"fourd studio is serving at {viewer.url}  (Ctrl-C to stop)", flush=True)
        if args.host == "127.0.0.1":
            print(f"From another machine: ssh -L {viewer.port}:127.0.0.1:{viewer.port} THIS_HOST, "
                  f"then open http://localhost:{viewer.port}", flush=True)
        serve(model, viewer)
    finally:
        model.shutdown()
        viewer.close()
    return 0


def run_window(args: argparse.Namespace, argv: list[str]) -> int:
    from studio.webengine import apply_chromium_flags

    software_gl = apply_chromium_flags() is not None
    try:
        from PySide6.QtWebEngineWidgets import QWebEngineView  # noqa: F401  (fail early with a sentence)
        from PySide6.QtWidgets import QApplication
    except ImportError as err:
        print(f"The desktop window cannot start ({err}); run `fourd-studio --browser` instead.", file=sys.stderr)
        return 1
    from studio.model import StudioError, StudioModel
    from studio.viewer import Viewer
    from studio.window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    viewer = Viewer(host="127.0.0.1", port=args.port)
    viewer.minimize_controls()  # the window has its own panels
    model = StudioModel(viewer=viewer)
    window = MainWindow(model, viewer.url, hide_browser_notices=software_gl)
    try:
        initial_scene(model, args.scene)
    except StudioError as err:
        window.show_error(str(err))
    window.create_panel.write_form()  # the example's method, prompt and preset
    window.show()
    try:
        return app.exec()
    finally:
        running = model.running_jobs()
        if running and model.keep_jobs_on_exit:
            print(f"fourd studio: waiting for {len(running)} job(s) to finish in the background "
                  f"(Ctrl-C cancels them; they can resume from their last checkpoint).", flush=True)
        model.shutdown()
        viewer.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    from studio.webengine import has_display

    if args.browser or not has_display(os.environ):
        return run_browser(args)
    return run_window(args, argv)


if __name__ == "__main__":
    sys.exit(main())

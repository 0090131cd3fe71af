"""SD Studio: a Stable Diffusion studio in the browser.

    python app.py                      # SD 1.5 from the hub (falls back to the offline model offline)
    python app.py --offline            # never touch the network
    python app.py --listen --auth me:secret
    python app.py --listen --auth-file users.txt   # several users, hashed passwords (python -m backend.serving.logins)

Every flag has an environment variable (``SDSTUDIO_*``) so a Hugging Face Space can configure it.
"""

from __future__ import annotations

import argparse
import logging
import os

from backend.generation.engine import Engine
from backend.models import hub, zerogpu
from backend.serving import space
from backend.serving.logins import Logins, read_user_file
from backend.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="SD Studio: a Stable Diffusion studio in the browser.")
    p.add_argument("--model", default=None, help="default model name from presets/models.json (SDSTUDIO_DEFAULT_MODEL)")
    # Host and port default to Gradio's GRADIO_SERVER_NAME/PORT, then 127.0.0.1:7860 (0.0.0.0 on a Space).
    p.add_argument("--host", default=env("SDSTUDIO_HOST"), help="address to serve on (SDSTUDIO_HOST)")
    p.add_argument("--listen", action="store_true", help="serve on 0.0.0.0 so the LAN can connect")
    port = env("SDSTUDIO_PORT")
    p.add_argument("--port", type=int, default=int(port) if port else None, help="port (SDSTUDIO_PORT)")
    p.add_argument("--share", action="store_true", default=env("SDSTUDIO_SHARE") == "1", help="Gradio share link")
    p.add_argument("--auth", default=env("SDSTUDIO_AUTH"), help="require login, user:password (SDSTUDIO_AUTH)")
    p.add_argument(
        "--auth-file",
        default=env("SDSTUDIO_AUTH_FILE"),
        help="require login: name:password lines; hash with python -m backend.serving.logins (SDSTUDIO_AUTH_FILE)",
    )
    p.add_argument("--api", action="store_true", default=env("SDSTUDIO_API") == "1", help="A1111 API (SDSTUDIO_API)")
    p.add_argument("--output-dir", default=None, help="where images are saved (SDSTUDIO_OUTPUT_DIR)")
    p.add_argument("--offline", action="store_true", default=None, help="never use the network (SDSTUDIO_OFFLINE)")
    p.add_argument("--device", default=None, help="auto, cuda, mps or cpu (SDSTUDIO_DEVICE)")
    p.add_argument(
        "--dtype",
        default=None,
        help="auto (GPU fp16; CPU bfloat16 where it has native bf16, else float32), float16, bfloat16 or float32 "
        "(SDSTUDIO_DTYPE)",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "torch", "openvino"),
        default=None,
        help="CPU inference: torch, openvino (UNet and VAE decoder), or auto (see docs/performance.md) "
        "(SDSTUDIO_BACKEND)",
    )
    p.add_argument(
        "--annotators",
        default=None,
        help="ControlNet preprocessor weights: a local folder or a hub repository (SDSTUDIO_ANNOTATORS)",
    )
    p.add_argument(
        "--workers",
        choices=("local", "ray"),
        default=None,
        help="where generation runs: in this process, or on Ray Serve replicas (SDSTUDIO_WORKERS)",
    )
    p.add_argument("--ray-address", default=None, help="join this Ray cluster, e.g. auto (SDSTUDIO_RAY_ADDRESS)")
    p.add_argument("--ray-replicas", type=int, default=None, help="engine replicas on Ray (SDSTUDIO_RAY_REPLICAS)")
    return p.parse_args(argv)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth must look like user:password")
    return user, password


def build_logins(auth: str | None, auth_file: str | None) -> Logins | None:
    """The users of ``--auth`` and ``--auth-file`` together (None: no login)."""
    users: dict[str, str] = {}
    if auth_file:
        try:
            users.update(read_user_file(auth_file))
        except (OSError, ValueError) as err:
            raise SystemExit(f"--auth-file: {err}") from None
    if pair := parse_auth(auth):
        users[pair[0]] = pair[1]
    return Logins(users) if users else None


def build_engine(settings: Settings) -> Engine:
    """The in-process engine, or with ``workers=ray`` a front end whose runs go to Ray Serve replicas."""
    if settings.workers == "ray":
        from backend.serving.remote import connect  # Ray is imported only when chosen

        return connect(settings)
    if settings.workers != "local":
        raise SystemExit(f"SDSTUDIO_WORKERS must be local or ray, not {settings.workers!r}")
    return Engine(settings)


def build_settings(args: argparse.Namespace) -> tuple[Settings, str]:
    """Settings from the flags, the ``SDSTUDIO_*`` variables and, on a Space, its profile; and the profile's notice."""
    defaults, notice = space.profile()
    settings = Settings.from_env(
        defaults=defaults,
        default_model=args.model,
        output_dir=args.output_dir,
        offline=args.offline,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        annotators=args.annotators,
        workers=args.workers,
        ray_address=args.ray_address,
        ray_replicas=args.ray_replicas,
    )
    return settings, notice


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    zerogpu.prepare()
    settings, space_notice = build_settings(args)
    settings, hub_notice = hub.settle_offline(settings)
    engine = build_engine(settings)
    logging.info(engine.precision)
    engine.startup_notice = " ".join(filter(None, [space_notice, hub_notice, engine.startup_notice]))
    if engine.startup_notice:
        logging.warning(engine.startup_notice)

    from ui.app import build_demo, launch_options  # gradio is imported only when serving

    demo = build_demo(engine)
    logins = build_logins(args.auth, args.auth_file)
    if args.api and args.listen and not logins:
        logging.warning("--listen --api without --auth: anyone on the network can generate through the API")
    share = args.share
    if share and space.space_id():
        logging.warning("--share ignored: this runs on a Hugging Face Space, which is already public at its own URL")
        share = False
    host, port = space.serve_address(args.host, args.port, args.listen)
    lifespan = None
    if args.api:
        from api.routes import api_lifespan
        from ui.app import queued_events

        # Mounted as the server starts, before it answers anything: a client that checks at once finds the API.
        flags = {"listen": args.listen, "server_name": host, "port": port, "share": share}
        lifespan = api_lifespan(engine, logins, lambda: queued_events(demo), flags)
    demo.launch(server_name=host, server_port=port, share=share, **launch_options(engine, logins, lifespan))


if __name__ == "__main__":
    main()

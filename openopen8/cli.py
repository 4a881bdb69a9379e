"""The ``openopen8`` command."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, Awaitable, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import ops
from .policy import describe as describe_policy
from .billing import PriceTable
from .crypto import SecretBox, server_secret
from .settings import Settings, default_data_dir, load_settings
from .store.base import StoreError, TokenLimits

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="openopen8: a self-hosted gateway for the OpenAI Realtime API.")
tokens_app = typer.Typer(no_args_is_help=True, help="Gateway tokens for clients.")
channels_app = typer.Typer(no_args_is_help=True, help="Upstream channels (OpenAI, Azure, local).")
app.add_typer(tokens_app, name="tokens")
app.add_typer(channels_app, name="channels")
sessions_app = typer.Typer(no_args_is_help=True, help="Running sessions.")
app.add_typer(sessions_app, name="sessions")

out = Console()
err = Console(stderr=True)

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Data directory (env OPENOPEN8_DATA_DIR).")]
DbUrl = Annotated[Optional[str], typer.Option("--database-url", help="sqlite:///… or postgresql://… (env OPENOPEN8_DATABASE_URL).")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="TOML settings file (env OPENOPEN8_CONFIG).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _settings(config: Path | None, data_dir: Path | None, database_url: str | None, **kw: Any) -> Settings:
    return load_settings(config, data_dir=data_dir, database_url=database_url, **kw)


def _run(settings: Settings, fn: Callable[..., Awaitable[Any]]) -> Any:
    """Open the store (migrating it), run ``fn(store, box)``, close."""
    from .store.sql import open_store

    async def main() -> Any:
        store = await open_store(settings.db_url)
        try:
            box = SecretBox(server_secret(settings.secret_key, settings.data_dir))
            return await fn(store, box)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except StoreError as exc:    # one line, however narrow the terminal
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _listen_problem(host: str, port: int) -> str | None:
    """Why ``serve`` could not listen on host:port, found by binding a
    throwaway socket the way the server will (SO_REUSEADDR, every address the
    host resolves to) -- before a new data dir is made and migrated."""
    if not 0 <= port <= 65535:
        return f"--port {port} is not a port (0 to 65535)."
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {host!r} is not a known address ({exc.strerror})."
    for family, kind, proto, _, addr in infos:
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:        # a family this machine lacks: asyncio skips it too
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does
            try:
                sock.bind(addr)
            except OSError as exc:
                return _listen_error(host, port, exc)
    return None


def _listen_error(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"{where} is in use: another process listens there. Stop it, or serve on "
                "another port with --port.")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {where}: permission denied (ports below 1024 need "
                "privileges); use --port 1024 or above.")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {where}: {host} is not an address of this machine; use "
                "--host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every interface).")
    return f"cannot listen on {where}: {exc.strerror or exc}."


@app.command()
def serve(host: Annotated[Optional[str], typer.Option(
              help=f"Address to bind; default {Settings.model_fields['host'].default} (this "
                   "machine only), 0.0.0.0 for every interface (env OPENOPEN8_HOST).")] = None,
          port: Annotated[Optional[int], typer.Option(
              help=f"Port to listen on; default {Settings.model_fields['port'].default} "
                   "(env OPENOPEN8_PORT).")] = None,
          data_dir: Annotated[Optional[Path], typer.Option(
              "--data-dir", help=f"Data directory (the SQLite database, secret.key, "
                                 f"openopen8.toml); default {default_data_dir()} "
                                 "(env OPENOPEN8_DATA_DIR).")] = None,
          database_url: DbUrl = None, config: ConfigFile = None,
          tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", help="PEM certificate: serve wss://.")] = None,
          tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="PEM private key.")] = None,
          ) -> None:
    """Serve the gateway in the foreground until Ctrl-C (SQLite in the data
    dir unless a database URL is given)."""
    settings = _settings(config, data_dir, database_url, host=host, port=port,
                         tls_cert=tls_cert, tls_key=tls_key)
    problem = _listen_problem(settings.host, settings.port)
    if problem:
        err.print(f"[red]error:[/red] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        PriceTable(settings.prices, settings.fallback_price)
    except ValueError as exc:
        err.print(f"[red]error:[/red] bad price settings: {exc}")
        raise typer.Exit(1) from None
    from .app import run as run_server
    try:
        run_server(settings)
    except KeyboardInterrupt:  # pragma: no cover
        pass
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:   # taken since the check above
            raise
        err.print(f"[red]error:[/red] {_listen_error(settings.host, settings.port, exc)}",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


# ---- tokens -----------------------------------------------------------------

QuotaUsd = Annotated[Optional[str], typer.Option("--quota-usd", help="Total spend allowed, USD ('none': no limit).")]
MaxSessions = Annotated[Optional[str], typer.Option("--max-sessions", help="Sessions open at once ('none': no limit).")]
MaxDuration = Annotated[Optional[str], typer.Option("--max-duration", help="Longest session, seconds ('none': no limit).")]
IdleTimeout = Annotated[Optional[str], typer.Option("--idle-timeout", help="End a session after this many seconds without a client event ('none': never).")]
PerMinute = Annotated[Optional[str], typer.Option("--sessions-per-minute", help="New sessions per minute ('none': no limit).")]


Origins = Annotated[Optional[str], typer.Option("--origins", help="Comma-separated browser origins (https://app.example.com) its sessions may come from; a page on another origin is refused 403 ('' on update: any).")]
Instructions = Annotated[Optional[str], typer.Option("--instructions", help="Policy: instructions the upstream always gets (see --instructions-mode).")]
InstructionsFile = Annotated[Optional[str], typer.Option("--instructions-file", help="Policy: the instructions, read from a file.")]
InstructionsMode = Annotated[Optional[str], typer.Option("--instructions-mode", help="Policy: 'prefix' (before the client's own, the default) or 'fixed' (the client's are refused).")]
Voices = Annotated[Optional[str], typer.Option("--voices", help="Policy: comma-separated voices allowed (the first is the default).")]
MaxOutputTokens = Annotated[Optional[int], typer.Option("--max-output-tokens", help="Policy: output tokens per response, at most.")]
Tools = Annotated[Optional[str], typer.Option("--tools", help="Policy: 'none', 'any', or a JSON file listing the function tools allowed.")]
Modalities = Annotated[Optional[str], typer.Option("--modalities", help="Policy: output modalities allowed: audio,text.")]
TranscriptionModel = Annotated[Optional[str], typer.Option("--transcription-model", help="Policy: the input transcription model sessions use.")]


def _limits_text(v: dict[str, Any]) -> str:
    parts = []
    if v["quota_usd"] is not None:
        parts.append(f"quota USD {v['quota_usd']}")
    for key, label in (("max_sessions", "max sessions"), ("max_duration", "max duration s"),
                       ("idle_timeout", "idle timeout s"),
                       ("sessions_per_minute", "sessions/min")):
        if v[key] is not None:
            parts.append(f"{label} {v[key]:g}")
    return ", ".join(parts) or "no limits"


@tokens_app.command("create")
def tokens_create(name: str,
                  models: Annotated[Optional[str], typer.Option(help="Comma-separated models this token may use (default: all).")] = None,
                  expires: Annotated[Optional[str], typer.Option(help="Last valid day, YYYY-MM-DD (UTC).")] = None,
                  quota_usd: QuotaUsd = None, max_sessions: MaxSessions = None,
                  max_duration: MaxDuration = None, idle_timeout: IdleTimeout = None,
                  sessions_per_minute: PerMinute = None, origins: Origins = None,
                  instructions: Instructions = None, instructions_file: InstructionsFile = None,
                  instructions_mode: InstructionsMode = None, voices: Voices = None,
                  max_output_tokens: MaxOutputTokens = None, tools: Tools = None,
                  modalities: Modalities = None, transcription_model: TranscriptionModel = None,
                  as_json: JsonOut = False, data_dir: DataDir = None, database_url: DbUrl = None,
                  config: ConfigFile = None) -> None:
    """Create a token and print its secret once (alone on the last line).

    The policy options pin what its sessions may do: the upstream never sees
    a value they forbid, and the client gets an error naming the parameter."""
    settings = _settings(config, data_dir, database_url)

    async def go(store: Any, box: SecretBox) -> Any:
        limits = TokenLimits(**ops.parse_limits(
            quota_usd=quota_usd, max_sessions=max_sessions, max_duration=max_duration,
            idle_timeout=idle_timeout, sessions_per_minute=sessions_per_minute))
        pol = ops.policy_from_options(instructions=instructions, instructions_file=instructions_file,
                              instructions_mode=instructions_mode, voices=voices,
                              max_output_tokens=max_output_tokens, tools=tools,
                              modalities=modalities, transcription_model=transcription_model)
        return await ops.create_token(store, name, ops.split_list(models), expires, limits,
                                      policy=pol, origins=ops.split_list(origins))

    new = _run(settings, go)
    if as_json:
        print(json.dumps({**ops.token_view(new.record), "secret": new.secret}))
        return
    view = ops.token_view(new.record)
    pinned = describe_policy(view["policy"])
    print(f"Created token {name!r} (models: {', '.join(view['models']) or 'all'}; "
          f"expires: {view['expires_at'] or 'never'}; {_limits_text(view)}"
          + (f"; policy: {pinned}" if pinned else "")
          + (f"; origins: {', '.join(view['origins'])}" if view["origins"] else "") + ").")
    print("Copy the secret now; it is stored only as a hash and cannot be shown again:")
    print(new.secret)


@tokens_app.command("update")
def tokens_update(name: str,
                  models: Annotated[Optional[str], typer.Option(help="Comma-separated models ('' : all).")] = None,
                  expires: Annotated[Optional[str], typer.Option(help="Last valid day, YYYY-MM-DD ('none': never).")] = None,
                  quota_usd: QuotaUsd = None, max_sessions: MaxSessions = None,
                  max_duration: MaxDuration = None, idle_timeout: IdleTimeout = None,
                  sessions_per_minute: PerMinute = None, origins: Origins = None,
                  instructions: Instructions = None, instructions_file: InstructionsFile = None,
                  instructions_mode: InstructionsMode = None, voices: Voices = None,
                  max_output_tokens: MaxOutputTokens = None, tools: Tools = None,
                  modalities: Modalities = None, transcription_model: TranscriptionModel = None,
                  clear_policy: Annotated[bool, typer.Option("--clear-policy", help="Drop the token's policy (then apply the policy options given).")] = False,
                  as_json: JsonOut = False, data_dir: DataDir = None, database_url: DbUrl = None,
                  config: ConfigFile = None) -> None:
    """Change a token's limits, policy or origins.  New sessions get them at once; running
    sessions see a new quota within balance_refresh_seconds and keep the
    duration and idle limits they started with."""
    settings = _settings(config, data_dir, database_url)
    rec = _run(settings, lambda store, box: ops.update_token(
        store, name, None if models is None else ops.split_list(models), expires,
        policy=ops.policy_from_options(
            instructions=instructions, instructions_file=instructions_file,
            instructions_mode=instructions_mode, voices=voices,
            max_output_tokens=max_output_tokens, tools=tools, modalities=modalities,
            transcription_model=transcription_model) or None, clear_policy=clear_policy,
        origins=None if origins is None else ops.split_list(origins),
        quota_usd=quota_usd, max_sessions=max_sessions, max_duration=max_duration,
        idle_timeout=idle_timeout, sessions_per_minute=sessions_per_minute))
    view = ops.token_view(rec)
    if as_json:
        print(json.dumps(view))
        return
    print(f"Updated token {name!r}: {_limits_text(view)}; spent USD {view['spent_usd']}.")


@tokens_app.command("list")
def tokens_list(as_json: JsonOut = False, data_dir: DataDir = None, database_url: DbUrl = None,
                config: ConfigFile = None) -> None:
    """List tokens (never their secrets)."""
    settings = _settings(config, data_dir, database_url)
    rows = [ops.token_view(t) for t in _run(settings, lambda store, box: store.list_tokens())]
    if as_json:
        print(json.dumps(rows))
        return
    pinned = [" ".join(filter(None, [describe_policy(r["policy"]),
                                     "origins:" + ",".join(r["origins"]) if r["origins"] else ""]))
              for r in rows]
    shown = any(pinned)      # a policy column only when some token has one
    table = Table("name", "prefix", "models", "expires", "limits", *(["policy"] if shown else []),
                  "spent USD", "state")
    for r, pin in zip(rows, pinned):
        table.add_row(r["name"], r["prefix"], ", ".join(r["models"]) or "all",
                      r["expires_at"] or "never", _limits_text(r), *([pin or "-"] if shown else []),
                      r["spent_usd"], "revoked" if r["revoked"] else "active")
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(name: str, data_dir: DataDir = None, database_url: DbUrl = None,
                  config: ConfigFile = None) -> None:
    """Revoke a token: new connections with it are refused at once."""
    settings = _settings(config, data_dir, database_url)
    _run(settings, lambda store, box: store.revoke_token(name))
    print(f"Revoked token {name!r}.")


@tokens_app.command("delete")
def tokens_delete(name: str, data_dir: DataDir = None, database_url: DbUrl = None,
                  config: ConfigFile = None) -> None:
    """Delete a token (revoke it first if it has open sessions); its usage
    stays in reports."""
    settings = _settings(config, data_dir, database_url)
    _run(settings, lambda store, box: ops.delete_token(store, name))
    print(f"Deleted token {name!r}.")


@sessions_app.command("list")
def sessions_list(token: Annotated[Optional[str], typer.Option(help="Only this token (name).")] = None,
                  model: Annotated[Optional[str], typer.Option(help="Only this model.")] = None,
                  channel: Annotated[Optional[str], typer.Option(help="Only this channel.")] = None,
                  close_code: Annotated[Optional[int], typer.Option("--close-code", help="Only sessions closed with this code.")] = None,
                  since: Annotated[Optional[str], typer.Option(help="Opened on or after YYYY-MM-DD.")] = None,
                  until: Annotated[Optional[str], typer.Option(help="Opened on or before YYYY-MM-DD.")] = None,
                  state: Annotated[str, typer.Option(help="all | open | closed")] = "all",
                  limit: Annotated[int, typer.Option(help="How many (newest first).")] = 50,
                  offset: Annotated[int, typer.Option(help="Skip this many.")] = 0,
                  as_json: JsonOut = False, data_dir: DataDir = None, database_url: DbUrl = None,
                  config: ConfigFile = None) -> None:
    """Sessions, newest first, with their spend (the admin API's GET /admin/sessions)."""
    settings = _settings(config, data_dir, database_url)
    page = _run(settings, lambda store, box: ops.list_sessions(
        store, token=token, model=model, channel=channel, close_code=close_code, since=since,
        until=until, state=state, limit=limit, offset=offset))
    if as_json:
        print(json.dumps(page))
        return
    table = Table("session", "token", "model", "channel", "opened", "closed", "code", "USD")
    for r in page["sessions"]:
        table.add_row(r["id"], r["token"] or "-", r["model"], r["channel"] or "-",
                      r["opened_at"][:19], (r["closed_at"] or "open")[:19],
                      str(r["close_code"] if r["close_code"] is not None else "-"), r["cost_usd"])
    out.print(table)
    print(f"{len(page['sessions'])} of {page['total']}")


@sessions_app.command("show")
def sessions_show(session_id: str, as_json: JsonOut = False, data_dir: DataDir = None,
                  database_url: DbUrl = None, config: ConfigFile = None) -> None:
    """One session: its counters, ledger rows and logged turns."""
    settings = _settings(config, data_dir, database_url)

    async def go(store: Any, box: SecretBox) -> Any:
        found = await store.get_session(session_id)
        if found is None:
            raise StoreError(f"no session {session_id!r}")
        return ops.session_view(found)

    s = _run(settings, go)
    if as_json:
        print(json.dumps(s))
        return
    print(f"{s['id']}: token {s['token']}, model {s['model']}, channel {s['channel'] or '-'}, "
          f"opened {s['opened_at']}, {'closed ' + s['closed_at'] if s['closed_at'] else 'open'}"
          f"{', code ' + str(s['close_code']) if s['close_code'] is not None else ''}, "
          f"USD {s['cost_usd']}")
    for t in s["turns"]:
        who = t["kind"] + (f" {t['name']}" if t["name"] else "")
        print(f"  {who}: {t['text']}")


@sessions_app.command("end")
def sessions_end(session_id: str, data_dir: DataDir = None, database_url: DbUrl = None,
                 config: ConfigFile = None) -> None:
    """End a running session (on whichever instance runs it, within
    balance_refresh_seconds): the client gets an error and close 1008."""
    settings = _settings(config, data_dir, database_url)
    _run(settings, lambda store, box: ops.end_session(store, session_id))
    print(f"Asked to end session {session_id!r}.")


# ---- channels ---------------------------------------------------------------

@channels_app.command("add")
def channels_add(
    name: str,
    type: Annotated[str, typer.Option("--type", help="openai | azure | local")],
    models: Annotated[str, typer.Option(help="Comma-separated models this channel serves.")],
    key: Annotated[Optional[str], typer.Option(help="Upstream API key (stored encrypted).")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="OpenAI base URL, as the openai SDK takes it (default https://api.openai.com/v1).")] = None,
    endpoint: Annotated[Optional[str], typer.Option(help="Azure endpoint, https://RESOURCE.openai.azure.com")] = None,
    deployment: Annotated[Optional[list[str]], typer.Option(help="Azure MODEL=DEPLOYMENT (repeatable).")] = None,
    api_version: Annotated[Optional[str], typer.Option("--api-version", help="Azure preview api-version (default: the GA /openai/v1 endpoint).")] = None,
    priority: Annotated[int, typer.Option(help="Higher is tried first.")] = 0,
    weight: Annotated[int, typer.Option(help="Share of sessions within a priority.")] = 1,
    data_dir: DataDir = None, database_url: DbUrl = None, config: ConfigFile = None,
) -> None:
    """Add an upstream channel."""
    settings = _settings(config, data_dir, database_url)

    async def go(store: Any, box: SecretBox) -> Any:
        return await ops.add_channel(
            store, box, name, type, key=key, models=ops.split_list(models), base_url=base_url,
            endpoint=endpoint, deployments=ops.parse_deployments(deployment),
            api_version=api_version, priority=priority, weight=weight)

    ch = _run(settings, go)
    print(f"Added {ch.type} channel {ch.name!r} for {', '.join(ch.models)} at {ch.base_url or 'in-process'}.")


@channels_app.command("list")
def channels_list(as_json: JsonOut = False, data_dir: DataDir = None, database_url: DbUrl = None,
                  config: ConfigFile = None) -> None:
    """List channels (never their keys), and the built-in local channel when
    it serves openopen8-local, with the state of its models."""
    from .builtin_channel import builtin_channel, builtin_view, healthz_url

    settings = _settings(config, data_dir, database_url)

    async def go(store: Any, box: SecretBox) -> Any:
        return await store.list_channels(), await builtin_channel(settings, store, box)

    stored, builtin = _run(settings, go)
    rows = [{**ops.channel_view(c), "builtin": False} for c in stored]
    if builtin is not None:
        rows.append(builtin_view(settings, builtin))
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("name", "type", "url", "models", "priority", "weight", "state")
    for r in rows:
        if r["builtin"]:
            table.add_row(r["name"], "local (built-in)", "in-process", ", ".join(r["models"]),
                          "-", "-", f"models {r['models_state']}")
            continue
        table.add_row(r["name"], r["type"], r["url"], ", ".join(r["models"]), str(r["priority"]),
                      str(r["weight"]), "enabled" if r["enabled"] else "disabled")
    for col in table.columns:
        col.overflow = "fold"          # a narrow terminal wraps names, never cuts them
    console = out if out.is_terminal else Console(width=200)
    console.print(table)
    if builtin is not None:
        r = rows[-1]
        addr = healthz_url(settings).removesuffix("/healthz")
        if r["parts"]:
            console.print(f"local (built-in) runs {', '.join(p['model'] for p in r['parts'])}.",
                          highlight=False, markup=False)
        if r["models_state_from"] != "files":
            console.print(f"Its models are {r['models_state']}, says the server at {addr}.",
                          highlight=False, markup=False)
        elif not r["problems"]:
            console.print(f"Its models are installed; no server answers at {addr} "
                          "(`openopen8 serve` loads them).", highlight=False, markup=False)
        for problem in r["problems"]:
            err.print(f"[yellow]{r['models_state']}:[/yellow] {escape(problem)}",
                      highlight=False, soft_wrap=True)
    if not rows:
        why = ("local_engine = false turns the built-in local engine off"
               if not settings.local_engine else
               "the built-in local engine is not installed: scripts/install-local.sh")
        err.print(f"No channels: add one with `openopen8 channels add` ({why}).",
                  highlight=False, soft_wrap=True)


@channels_app.command("disable")
def channels_disable(name: str, data_dir: DataDir = None, database_url: DbUrl = None,
                     config: ConfigFile = None) -> None:
    """Stop routing new sessions to a channel."""
    settings = _settings(config, data_dir, database_url)
    _run(settings, lambda store, box: store.set_channel_enabled(name, False))
    print(f"Disabled channel {name!r}.")


@channels_app.command("enable")
def channels_enable(name: str, data_dir: DataDir = None, database_url: DbUrl = None,
                    config: ConfigFile = None) -> None:
    """Route new sessions to a channel again."""
    settings = _settings(config, data_dir, database_url)
    _run(settings, lambda store, box: store.set_channel_enabled(name, True))
    print(f"Enabled channel {name!r}.")


@channels_app.command("update")
def channels_update(
    name: str,
    priority: Annotated[Optional[int], typer.Option(help="Higher is tried first.")] = None,
    weight: Annotated[Optional[int], typer.Option(help="Share of sessions within a priority.")] = None,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated models it serves.")] = None,
    key: Annotated[Optional[str], typer.Option(help="A new upstream key (rotation).")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="A new base URL / endpoint.")] = None,
    api_version: Annotated[Optional[str], typer.Option("--api-version", help="Azure api-version ('' : GA).")] = None,
    data_dir: DataDir = None, database_url: DbUrl = None, config: ConfigFile = None,
) -> None:
    """Change a channel: priority, weight, models, key, URL (the admin API's PATCH)."""
    settings = _settings(config, data_dir, database_url)
    ch = _run(settings, lambda store, box: ops.update_channel(
        store, box, name, priority=priority, weight=weight,
        models=None if models is None else ops.split_list(models), key=key, base_url=base_url,
        api_version=api_version))
    print(f"Updated channel {ch.name!r}: priority {ch.priority}, weight {ch.weight}, "
          f"models {', '.join(ch.models)}.")


@channels_app.command("test")
def channels_test(name: str,
                  model: Annotated[Optional[str], typer.Option(help="Model to open (default: its first).")] = None,
                  as_json: JsonOut = False, data_dir: DataDir = None,
                  database_url: DbUrl = None, config: ConfigFile = None) -> None:
    """Open a real upstream session on a channel: session.created, or why not."""
    from .providers.routing import Router

    settings = _settings(config, data_dir, database_url)

    async def go(store: Any, box: SecretBox) -> Any:
        found = [c for c in await store.list_channels() if c.name == name]
        if not found:
            raise StoreError(f"no channel named {name!r}")
        return await ops.test_channel(Router(store, box, timeout=settings.connect_timeout),
                                      found[0], model)

    res = _run(settings, go)
    if as_json:
        print(json.dumps(res))
    elif res["ok"]:
        print(f"{name}: {res['event']} in {res['seconds']:.2f} s ({res['model']}).")
    else:
        err.print(f"{name}: {res['kind']}: {res['detail']} ({res['seconds']:.2f} s).",
                  highlight=False, markup=False)
    if not res["ok"]:
        raise typer.Exit(1)


@channels_app.command("remove")
def channels_remove(name: str, data_dir: DataDir = None, database_url: DbUrl = None,
                    config: ConfigFile = None) -> None:
    """Delete a channel."""
    settings = _settings(config, data_dir, database_url)
    _run(settings, lambda store, box: store.remove_channel(name))
    print(f"Removed channel {name!r}.")


# ---- usage ------------------------------------------------------------------

_USAGE_COLUMNS = (("responses", "resp"), ("input_text", "text in"), ("cached_text", "cached text"),
                  ("input_audio", "audio in"), ("cached_audio", "cached audio"),
                  ("input_image", "image in"), ("output_text", "text out"),
                  ("output_audio", "audio out"), ("transcription_seconds", "transcr. s"))


@app.command()
def usage(token: Annotated[Optional[str], typer.Option(help="Only this token (name).")] = None,
          model: Annotated[Optional[str], typer.Option(help="Only this model.")] = None,
          since: Annotated[Optional[str], typer.Option(help="From this day (YYYY-MM-DD) or time, inclusive.")] = None,
          until: Annotated[Optional[str], typer.Option(help="Through this day (YYYY-MM-DD), or before this time.")] = None,
          by: Annotated[str, typer.Option(help="Group by day | model | token | channel.")] = "model",
          as_json: JsonOut = False, data_dir: DataDir = None, database_url: DbUrl = None,
          config: ConfigFile = None) -> None:
    """Tokens per class and cost, from the usage ledger.  Input counts include
    the cached ones; rows priced by the fallback price are counted."""
    settings = _settings(config, data_dir, database_url)
    report = _run(settings, lambda store, box: ops.usage_report(
        store, by=by, token=token, model=model, since=since, until=until, by_name="--by"))
    if as_json:
        print(json.dumps(report))
        return
    table = Table(by, *(label for _, label in _USAGE_COLUMNS), "cost USD", "fallback")
    for col in table.columns:
        col.overflow = "fold"          # a narrow terminal wraps figures, never cuts them
    def add(r: dict[str, Any]) -> None:
        table.add_row(str(r["key"]), *(f"{r[k]:g}" if isinstance(r[k], float) else str(r[k])
                                       for k, _ in _USAGE_COLUMNS),
                      r["cost_usd"], str(r["priced_by_fallback"] or ""))

    for r in report["rows"]:
        add(r)
    table.add_section()
    add(report["total"])
    # piped or captured output is not squeezed to 80 columns
    (out if out.is_terminal else Console(width=200)).print(table)
    if report["total"]["priced_by_fallback"]:
        err.print("[yellow]note:[/yellow] some usage was priced by the fallback price "
                  '(a model with no price): set \\[prices."MODEL"] in the config.')


# ---- talk -------------------------------------------------------------------

@app.command()
def talk(
    url: Annotated[str, typer.Option(help="Gateway address, ws://host:port (http:// works too).")] = "ws://127.0.0.1:8000",
    token: Annotated[Optional[str], typer.Option(envvar="OPENOPEN8_TOKEN", show_envvar=True, help="Gateway token.")] = None,
    model: Annotated[str, typer.Option(help="Model to talk to.")] = "openopen8-local",
    file: Annotated[Optional[Path], typer.Option("--file", help="Say this: a WAV (any rate, mono or stereo) or raw PCM16 (with --rate).")] = None,
    rate: Annotated[Optional[int], typer.Option(help="Sample rate of a raw PCM16 --file.")] = None,
    channels: Annotated[int, typer.Option(help="Channels of a raw PCM16 --file.")] = 1,
    mic: Annotated[bool, typer.Option("--mic", help="Talk through the microphone and hear the reply (extra 'mic'); Ctrl-C ends.")] = False,
    text: Annotated[Optional[str], typer.Option("--text", help="Send a text turn instead of audio.")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Send the file as fast as possible, not in real time.")] = False,
    manual: Annotated[bool, typer.Option("--manual", help="No server VAD: commit the audio and ask for the response ourselves.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print every server event as one JSON line instead of captions.")] = False,
    out_wav: Annotated[Optional[Path], typer.Option("--out", help="Write all reply audio to this WAV.")] = None,
    voice: Annotated[Optional[str], typer.Option(help="Voice of the reply (e.g. alloy, marin).")] = None,
    instructions: Annotated[Optional[str], typer.Option(help="Session instructions.")] = None,
    dialect: Annotated[str, typer.Option(help="Protocol dialect to speak: ga or beta.")] = "ga",
    audio_format: Annotated[str, typer.Option("--audio-format", help="Session audio format: pcm16, pcmu or pcma.")] = "pcm16",
    audio_rate: Annotated[int, typer.Option("--audio-rate", help="Session pcm16 rate (OpenAI takes only 24000).")] = 24000,
    transcribe: Annotated[str, typer.Option(help="Model that transcribes your speech for captions ('' for none).")] = "gpt-4o-mini-transcribe",
    text_only: Annotated[bool, typer.Option("--text-only", help="Ask for text replies, no audio.")] = False,
    tools: Annotated[Optional[Path], typer.Option("--tools", help="JSON list of function tool schemas.")] = None,
    tool_result: Annotated[Optional[list[str]], typer.Option("--tool-result", help="NAME=JSON: answer calls of NAME with this (repeatable); otherwise you are asked.")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds without a server event.")] = 30.0,
) -> None:
    """Hold a voice conversation through the gateway: send a file, a text or
    your voice; see live captions; get the reply audio and a summary."""
    from .talk import UsageError as TalkUsageError, build, talk as run_talk
    from .talk.runner import say_error

    try:
        opts = build(url=url, token=token, model=model, file=file, rate=rate, channels=channels,
                     mic=mic, text=text, fast=fast, manual=manual, json_out=as_json, out=out_wav,
                     voice=voice, instructions=instructions, dialect=dialect,
                     audio_format=audio_format, audio_rate=audio_rate, transcribe=transcribe,
                     text_only=text_only, tools=tools, tool_results=tool_result or [],
                     timeout=timeout)
    except TalkUsageError as exc:
        say_error(err, str(exc))
        raise typer.Exit(2) from None
    raise typer.Exit(run_talk(opts))


def main() -> None:  # console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

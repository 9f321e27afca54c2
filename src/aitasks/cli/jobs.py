"""`aitasks submit|status|watch|result|cancel|jobs|types`: the service from a terminal, over its HTTP API.

They read AITASKS_URL and AITASKS_API_KEY. Exit codes: 0 done, 1 the job failed or was cancelled,
2 bad usage or input the service refused, 3 the service could not be reached or failed, 4 still running
when --timeout ran out. Errors print one line, never a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from aitasks.client import (
    ApiError,
    Client,
    ClientError,
    ConnectionFailed,
    Job,
    JobEnded,
    ValidationError,
    WaitTimeout,
)

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_SERVICE, EXIT_TIMEOUT = 0, 1, 2, 3, 4
F = TypeVar("F", bound=Callable[..., Any])

Url = Annotated[str | None, typer.Option("--url", envvar="AITASKS_URL", help="Service URL (AITASKS_URL).")]
Key = Annotated[str | None, typer.Option("--key", envvar="AITASKS_API_KEY", help="API key (AITASKS_API_KEY).")]
Out = Annotated[Path | None, typer.Option("--output", "-o", help="Save the job's files in this folder.")]
# The task list's filters (GET /api/v1/tasks/ and its export).
Status = Annotated[str | None, typer.Option("--status", help="PENDING, PROCESSING, SUCCESS, ... (comma-separate).")]
Type = Annotated[str | None, typer.Option("--type", help="Only this job type.")]
After = Annotated[str | None, typer.Option("--created-after", help="ISO 8601 (2026-12-01T00:00:00Z) or epoch s.")]
Before = Annotated[str | None, typer.Option("--created-before", help="ISO 8601 or epoch seconds.")]
Text = Annotated[str | None, typer.Option("--q", help="Text in the message or the error (any case).")]


def _err(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def one_line_errors(fn: F) -> F:
    """Turn the client's exceptions into one line on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JobEnded as exc:
            raise _err(str(exc), EXIT_JOB_FAILED) from None
        except ValidationError as exc:
            detail = "; ".join(f"{f.field}: {f.message}" for f in exc.fields)
            raise _err(exc.message + (f" ({detail})" if detail and detail not in exc.message else ""),
                       EXIT_USAGE) from None
        except WaitTimeout as exc:
            raise _err(str(exc), EXIT_TIMEOUT) from None
        except ApiError as exc:
            raise _err(f"{exc.message} (HTTP {exc.status})", EXIT_USAGE if exc.status < 500 else EXIT_SERVICE) from None
        except (ConnectionFailed, ClientError) as exc:
            raise _err(str(exc), EXIT_SERVICE) from None

    return wrapper  # type: ignore[return-value]


def parse_value(text: str) -> Any:
    """`3` -> 3, `true` -> True, `[[1,2,3,4]]` -> a list; anything that is not JSON stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _err(f"--param takes name=value, not {item!r}", EXIT_USAGE)
        params[name] = parse_value(value)
    return params


def assign_files(items: list[str], file_inputs: list[str], task_type: str) -> dict[str, Path]:
    """`field=path` goes to that field; bare paths fill the type's file inputs in catalog order."""
    files: dict[str, Path] = {}
    free = list(file_inputs)
    for item in items:
        field, sep, path = item.partition("=")
        if not sep:
            field, path = "", item
        if not field:
            if not free:
                raise _err(f"{task_type} takes no more files (its file inputs: {', '.join(file_inputs) or 'none'})",
                           EXIT_USAGE)
            field = free[0]
        if field in free:
            free.remove(field)
        p = Path(path)
        if not p.is_file():
            raise _err(f"no such file: {path}", EXIT_USAGE)
        files[field] = p
    return files


def printable(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without inlined base64 (files are saved with -o, not printed)."""
    out = dict(doc)
    if isinstance(out.get("result"), dict):
        out["result"] = {k: v for k, v in out["result"].items() if k != "image_data"}
    return out


def echo_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def follow(job: Job, timeout: float | None, quiet: bool = False) -> dict[str, Any]:
    """Wait for the job with a live progress bar showing the worker's message; its final status."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.fields[status]:<10}"), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                  disable=quiet) as bar:
        task = bar.add_task("waiting", total=100, status="PENDING")

        def show(doc: dict[str, Any]) -> None:
            done = 100 if doc.get("status") == "SUCCESS" else doc.get("progress", 0)
            bar.update(task, completed=done, description=str(doc.get("message") or ""),
                       status=str(doc.get("status")))

        try:
            job.wait(timeout, on_progress=show)
        except JobEnded:
            pass
    return job.last


def save_files(job: Job, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [job.download(name, folder / name) for name in job.artifacts()]


def finish(job: Job, doc: dict[str, Any], output: Path | None) -> None:
    """Print the outcome, save the files; exit 1 when the job did not succeed."""
    if doc.get("status") != "SUCCESS":
        raise _err(f"job {job.id} ended {doc.get('status')}: {doc.get('error') or doc.get('message')}"
                   f" (attempts: {doc.get('attempts', '?')})", EXIT_JOB_FAILED)
    full = job._full()
    echo_json(printable(full))
    if output is not None:
        for path in save_files(job, output):
            typer.echo(f"saved {path}", err=True)


def register(app: typer.Typer) -> None:
    @app.command()
    @one_line_errors
    def submit(
        task_type: Annotated[str, typer.Argument(help="A job type (see `aitasks types`).")],
        files: Annotated[list[str] | None, typer.Argument(help="Input files: PATH, or FIELD=PATH.")] = None,
        param: Annotated[list[str] | None, typer.Option("--param", "-p", help="A parameter, name=value "
                                                        "(value parsed as JSON when it is).")] = None,
        prompt: Annotated[str | None, typer.Option(help="The prompt, for types that take one.")] = None,
        wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait with a progress bar; print the result.")] = False,
        timeout: Annotated[float | None, typer.Option(help="With --wait: give up after this many seconds.")] = None,
        output: Out = None, url: Url = None, key: Key = None,
    ) -> None:
        """Submit a job; prints its id (or, with --wait, follows it and prints the result)."""
        with Client(url, key) as c:
            catalog = {t["name"]: t for t in c.task_types()}
            if task_type not in catalog:
                raise _err(f"unknown job type {task_type!r}; known: {', '.join(sorted(catalog))}", EXIT_USAGE)
            inputs: dict[str, Any] = dict(assign_files(files or [], catalog[task_type]["file_inputs"], task_type))
            params = parse_params(param or [])
            if params:
                inputs["parameters"] = params
            if prompt is not None:
                inputs["prompt"] = prompt
            job = c.submit(task_type, **inputs)
            if not wait:
                typer.echo(job.id)
                return
            typer.echo(f"job {job.id}", err=True)
            finish(job, follow(job, timeout), output)

    @app.command()
    @one_line_errors
    def status(task_id: str, url: Url = None, key: Key = None) -> None:
        """Print a job's status document."""
        with Client(url, key) as c:
            echo_json(c.job(task_id).status())

    @app.command()
    @one_line_errors
    def watch(task_id: str, timeout: Annotated[float | None, typer.Option()] = None, output: Out = None,
              url: Url = None, key: Key = None) -> None:
        """Follow a job with a progress bar until it ends; print its result."""
        with Client(url, key) as c:
            job = c.job(task_id)
            finish(job, follow(job, timeout), output)

    @app.command()
    @one_line_errors
    def result(task_id: str, output: Out = None, url: Url = None, key: Key = None) -> None:
        """Print a finished job's result (without inlined images); -o saves its files."""
        with Client(url, key) as c:
            job = c.job(task_id)
            doc = job._full()
            if doc.get("status") not in ("SUCCESS", "FAILURE", "REVOKED"):
                raise _err(f"job {task_id} is still {doc.get('status')} ({doc.get('progress', 0)} %)", EXIT_TIMEOUT)
            finish(job, doc, output)

    @app.command()
    @one_line_errors
    def cancel(task_id: str, url: Url = None, key: Key = None) -> None:
        """Cancel a job (a queued one never starts; a running one stops at its next progress report)."""
        with Client(url, key) as c:
            typer.echo(c.job(task_id).cancel().get("message", "cancelled"))

    jobs_app = typer.Typer(help="Your jobs, newest first (filters below); `export` streams your history.",
                           invoke_without_command=True)
    app.add_typer(jobs_app, name="jobs")

    @jobs_app.callback()
    @one_line_errors
    def jobs_(
        ctx: typer.Context,
        status_: Status = None, task_type: Type = None, created_after: After = None, created_before: Before = None,
        q: Text = None,
        limit: Annotated[int, typer.Option(help="At most this many.")] = 20,
        url: Url = None, key: Key = None,
    ) -> None:
        """Your jobs, newest first: live ones and the history (docs/history.md)."""
        if ctx.invoked_subcommand is not None:
            return
        from rich.console import Console
        from rich.table import Table

        with Client(url, key) as c:
            table = Table()
            table.add_column("TASK ID", no_wrap=True, min_width=36)
            for name in ("TYPE", "STATUS", "PROGRESS", "CREATED (UTC)", "MESSAGE"):
                table.add_column(name)
            for t in c.jobs(status=status_, task_type=task_type, limit=limit, created_after=created_after,
                            created_before=created_before, q=q):
                table.add_row(t["task_id"], t.get("task_type", ""), t["status"], f"{t.get('progress', 0)} %",
                              str(t.get("created_at", ""))[:19].replace("T", " "), str(t.get("message", "")))
            Console().print(table)

    @jobs_app.command("export")
    @one_line_errors
    def export(
        format_: Annotated[str, typer.Option("--format", help="jsonl (one JSON object a line) or csv.")] = "jsonl",
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
        status_: Status = None, task_type: Type = None, created_after: After = None, created_before: Before = None,
        q: Text = None, url: Url = None, key: Key = None,
    ) -> None:
        """Stream your ended jobs from the store of record, newest first, as JSON Lines or CSV."""
        import sys

        if format_ not in ("jsonl", "csv"):
            raise typer.BadParameter("must be jsonl or csv", param_hint="--format")
        with Client(url, key) as c:
            if output is None:
                c.export(sys.stdout.buffer, format_, status=status_, task_type=task_type,
                         created_after=created_after, created_before=created_before, q=q)
                sys.stdout.buffer.flush()
                return
            with open(output, "wb") as out:
                written = c.export(out, format_, status=status_, task_type=task_type, created_after=created_after,
                                   created_before=created_before, q=q)
            typer.echo(f"{written} bytes written to {output}", err=True)

    @app.command()
    @one_line_errors
    def types(url: Url = None, key: Key = None) -> None:
        """The job types this service runs, with their queue, inputs and limits."""
        from rich.console import Console
        from rich.table import Table

        with Client(url, key) as c:
            table = Table()
            table.add_column("TYPE", no_wrap=True)
            for name in ("QUEUE", "FILES", "TIME LIMIT", "AVAILABLE", "DESCRIPTION"):
                table.add_column(name)
            for t in c.task_types():
                table.add_row(t["name"], t["queue"], ", ".join(t["file_inputs"]) or "-",
                              f"{t['limits']['time_limit_s']:g} s",
                              "yes" if t.get("available", True) else f"no: {t.get('unavailable_reason')}",
                              t["description"])
            Console().print(table)

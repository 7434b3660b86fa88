"""`steuops export` (ONNX + parity, logged on the version), `steuops pack` (into BentoML's model store) and
`steuops serve` (BentoML).

Library imports stay inside the commands so that `steuops --help` loads none of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from steuops.cli import app, epilog

SERVICE = "steuops.serving.service:Classifier"


def _check_choice(alias: str | None, version: str | None) -> None:
    from steuops.errors import UsageError

    if alias and version:
        raise UsageError("--alias and --version both given", hint="name the version one way: --alias A or --version N")


@app.command("export", epilog=epilog(
    "steuops export --model clinical-dx", "steuops export --model clinical-dx --version 3 --out onnx-v3",
    codes="0 exported and logged; 1 ONNX and PyTorch disagree (nothing is logged) or an unexpected error; "
          "2 bad input (unknown model/version, bad option), nothing was changed"))
def export_command(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    version: str | None = typer.Option(None, "--version", help="Version to export."),
    alias: str | None = typer.Option(None, "--alias", help="Alias to export (default production)."),
    out: Path | None = typer.Option(None, "--out", help="Also keep the exported folder here."),
    home: Path | None = typer.Option(None, "--home", help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
    max_length: int | None = typer.Option(None, "--max-length", help="Token limit (default: the one the version "
                                          "was evaluated with; a different one is refused)."),
    fp16: bool | None = typer.Option(None, "--fp16/--no-fp16", help="Also make model.fp16.onnx (for GPU "
                                     "servers). Default: only when this machine has a CUDA device."),
    rescore: bool = typer.Option(False, "--rescore", help="Score the served file on every held-out note again, "
                                 "even when an earlier export of the version scored the same bytes."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON envelope instead of tables."),
) -> None:
    """Export a version to ONNX (+ optimised, + fp16 where there is a GPU), check parity with PyTorch, log it
    under onnx/.

    The served file is scored on every held-out note. Exported again, it comes out byte-identical: then the
    figures the earlier export logged for those bytes (same notes, tokenizer, settings, ONNX Runtime) are
    reused and the file is checked on the first 64 notes now (--rescore: all of them again).
    A version a crash left without its export is marked complete once the export is logged.
    Exit 1 listing every mismatching text when ONNX and PyTorch disagree (nothing is logged).
    """
    from steuops.cli.render import emit_json
    from steuops.pipeline import export

    _check_choice(alias, version)
    result = export(model, alias=None if version else (alias or "production"), version=version, out_dir=out,
                    max_length=max_length, home=home, fp16=fp16, rescore=rescore)
    if as_json:
        emit_json("export", result)
        return
    _print_export(result)


def _print_export(doc: dict) -> None:
    from rich.table import Table

    from steuops.cli.render import console

    console.print(f"[bold]{doc['name']} v{doc['version']}[/bold] exported ({doc['exporter']} exporter), "
                  f"logged under onnx/", highlight=False)
    gated = any(rep.get("reference") == "evaluation" for rep in doc["parity"].values())
    title = "parity with the logits the gate scored (PyTorch, fp32)" if gated else "parity with PyTorch"
    table = Table(title=title, title_justify="left")
    for col in ("file", "texts", "max |logit diff|", "atol", "label agreement", "result"):
        table.add_column(col)
    for kind, rep in doc["parity"].items():
        if "skipped" in rep:
            table.add_row(kind, "-", "-", "-", "-", f"skipped: {rep['skipped'][:60]}")
            continue
        table.add_row(kind, str(rep["n_texts"]), f"{rep['max_abs_diff']:.2e}", f"{rep['atol']:g}",
                      f"{rep['label_agreement']:.3f}", "pass" if rep["passed"] else "FAIL")
    console.print(table)
    for kind, rep in doc["parity"].items():
        if not (rep.get("held_out") or {}).get("scores_reused"):
            continue
        earlier = rep["held_out"].get("parity")
        then = (f", checked then on {earlier['n_texts']} notes (max |logit diff| {earlier['max_abs_diff']:.2e})"
                if earlier else "")
        console.print(f"{kind}: the same bytes as the file of the version's earlier export{then}; its held-out "
                      f"scores are reused (--rescore: score every note again)", highlight=False)
    fused = ", ".join(f"{k} {v}" for k, v in doc["fused_ops"].items() if v) or "none"
    console.print(f"fused ops: {fused}", highlight=False)
    console.print(f"forgotten classes: {', '.join(doc['forgotten']) or 'none'}", highlight=False)
    console.print(f"steuops.onnx_sha256 {doc['onnx_sha256']}", highlight=False)


@app.command("pack", epilog=epilog(
    "steuops pack --model clinical-dx", "steuops pack --model clinical-dx --version 3 --json",
    "steuops pack --onnx-dir onnx-v3",
    codes="0 packed (or already in the store: same tag); 2 bad input (unknown model/version, no ONNX export, "
          "a folder whose files do not match its manifest), nothing was changed; 1 unexpected error"))
def pack_command(
    model: str | None = typer.Option(None, "--model", "-m", help="Registered model name."),
    version: str | None = typer.Option(None, "--version", help="Version to pack."),
    alias: str | None = typer.Option(None, "--alias", help="Alias to pack (default production)."),
    onnx_dir: Path | None = typer.Option(None, "--onnx-dir", help="Pack an exported folder, no registry."),
    home: Path | None = typer.Option(None, "--home", help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
    as_json: bool = typer.Option(False, "--json", help='Print one JSON envelope ({"tag": ...}) instead of the tag.'),
) -> None:
    """Save a version's ONNX export in BentoML's model store ($BENTOML_HOME/models) and print its tag.

    The tag is steuops-MODEL:vVERSION-SHA8 (of model.onnx), so packing the same export again prints the
    same tag and stores nothing. Serve it with `steuops serve --packed TAG`; `STEUOPS_BENTO_MODEL=TAG
    bentoml build` puts it into a Bento that needs no registry.
    """
    from steuops.errors import UsageError

    _check_choice(alias, version)
    if onnx_dir and (model or alias or version):
        raise UsageError("--onnx-dir and a registered model both given",
                         hint="pack a folder (--onnx-dir DIR) or a version (--model M [--alias A | --version N])")
    if not (onnx_dir or model):
        raise UsageError("nothing to pack", hint="pass --model NAME (or --onnx-dir DIR)")
    from steuops.serving.service import pack, pack_version

    if onnx_dir:
        tag = pack(onnx_dir)
    else:
        tag = pack_version(model, alias=None if version else (alias or "production"), version=version,
                           home=str(home) if home else None)
    if as_json:
        from steuops.cli.render import emit_json

        emit_json("pack", {"tag": tag})
        return
    typer.echo(tag)  # the tag alone on stdout: TAG=$(steuops pack --model M)


@app.command("serve", epilog=epilog(
    "steuops serve --model clinical-dx --port 3000",
    "steuops serve --onnx-dir onnx-v3 --host 0.0.0.0",
    "steuops serve --packed steuops-clinical-dx:v3-1a2b3c4d",
    codes="runs until stopped; 0 stopped cleanly (SIGTERM, Ctrl-C); 2 nothing to serve (unknown model, no ONNX export, "
          "a --packed tag not in the model store), "
          "checked before the server starts; 1 unexpected error"))
def serve_command(
    model: str | None = typer.Option(None, "--model", "-m", envvar="STEUOPS_MODEL", help="Registered model name."),
    alias: str | None = typer.Option(None, "--alias", envvar="STEUOPS_ALIAS",
                                     help="Alias to serve (default production)."),
    version: str | None = typer.Option(None, "--version", envvar="STEUOPS_VERSION",
                                       help="Serve this version instead of an alias."),
    onnx_dir: Path | None = typer.Option(None, "--onnx-dir", envvar="STEUOPS_ONNX_DIR",
                                         help="Serve an exported folder, no registry."),
    packed: str | None = typer.Option(None, "--packed", envvar="STEUOPS_BENTO_MODEL",
                                      help="Serve this tag from BentoML's model store (`steuops pack`); wins over "
                                           "--model and --onnx-dir."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 in a container)."),
    port: int = typer.Option(3000, "--port", envvar="STEUOPS_PORT", help="HTTP port."),
    home: Path | None = typer.Option(None, "--home", envvar="STEUOPS_HOME",
                                     help="steuops home (default $STEUOPS_HOME or ~/.steuops)."),
) -> None:
    """Serve models:/MODEL@production (or --version) with BentoML: /classify, /metadata, /readyz, /livez.

    Set STEUOPS_API_KEY to require a key; STEUOPS_MAX_TEXTS / STEUOPS_MAX_CHARS for request limits
    (400), STEUOPS_MAX_BODY_BYTES for the body limit (413), STEUOPS_MAX_INFLIGHT (429) and
    STEUOPS_MAX_LATENCY_MS (503) for load shedding; both answers carry Retry-After. The ONNX files
    are cached under HOME/cache/onnx/MODEL/VERSION and checked by sha256 before each reuse.
    """
    import sys

    child_env = serve_env(model, alias=alias, version=version, onnx_dir=onnx_dir, home=home, packed=packed)
    cmd = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: in a container `steuops serve` is PID 1 and must receive SIGTERM itself.
    os.execve(sys.executable, cmd, child_env)


def serve_env(model: str | None, *, alias: str | None, version: str | None, onnx_dir: Path | None,
              home: Path | None, packed: str | None = None) -> dict[str, str]:
    """The environment of the server process; checks up front that there is something to serve.

    A packed tag wins (as in the server, which loads STEUOPS_BENTO_MODEL first): it is resolved to its full
    tag here, so `steuops-clinical-dx` serves the entry that is latest now, and a tag not in the local store
    fails with exit 2 before the server starts. Without one, STEUOPS_BENTO_MODEL is not passed on.
    """
    from steuops.errors import ConfigError, RegistryError

    child = dict(os.environ)
    _check_choice(alias, version)
    if packed:
        from steuops.serving.service import packed_model

        child["STEUOPS_BENTO_MODEL"] = str(packed_model(packed).tag)
        return child
    child.pop("STEUOPS_BENTO_MODEL", None)
    if onnx_dir:
        if not (onnx_dir / "labels.json").is_file():
            raise ConfigError(f"--onnx-dir {onnx_dir}: no labels.json", hint="point at a folder from `steuops export --out`")
        child["STEUOPS_ONNX_DIR"] = str(onnx_dir.resolve())
        return child
    if not model:
        raise ConfigError("no model to serve", hint="pass --model NAME (or --onnx-dir DIR)")
    from steuops.export import ARTIFACT_PATH, MODEL_FILE
    from steuops.registry import Registry

    registry = Registry(home=home)
    ref = registry.resolve(model, alias=None if version else (alias or "production"), version=version)
    if f"{ARTIFACT_PATH}/{MODEL_FILE}" not in registry.artifact_names(ref, ARTIFACT_PATH):
        raise RegistryError(f"{ref} has no ONNX export", hint=f"run: steuops export --model {model} --version {ref.version}")
    child.pop("STEUOPS_ONNX_DIR", None)
    child.update({"STEUOPS_MODEL": model, "STEUOPS_ALIAS": alias or "production"})
    if version:
        child["STEUOPS_VERSION"] = str(version)
    else:
        child.pop("STEUOPS_VERSION", None)
    if home:
        child["STEUOPS_HOME"] = str(Path(home).expanduser().resolve())
    return child

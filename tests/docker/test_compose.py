"""The container set-up agrees with the compose spec and with the code it runs.

No Docker daemon is needed: the compose file is checked against the official
compose-spec JSON schema (vendored in check-jsonschema, so offline), and the
commands it runs are checked against the repository -- modules that exist,
flags the CLIs accept, sample files that are really there, and artefact paths
that one stage writes and the next one reads.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SHELL_OPERATORS = {";", "&&", "||", "|", "&"}


# --------------------------------------------------------------------------- helpers


def _load_yaml(path: Path) -> dict:
    """PyYAML if present, else ruamel.yaml (a dependency of check-jsonschema)."""
    text = path.read_text()
    try:
        import yaml

        return yaml.safe_load(text)
    except ImportError:
        pass
    try:
        from ruamel.yaml import YAML
    except ImportError:
        pytest.skip("neither PyYAML nor ruamel.yaml is installed")
    return YAML(typ="safe", pure=True).load(text)


_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def _interpolate(value):
    """Resolve compose `${VAR:-default}` with its default (host env ignored: deterministic)."""
    if isinstance(value, str):
        value = _VAR.sub(lambda m: m.group("default") or "", value.replace("$$", "\0"))
        return value.replace("\0", "$")
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return _interpolate(_load_yaml(COMPOSE))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)] with line continuations joined and comments dropped."""
    logical, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    out = []
    for line in logical:
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def _instructions(name: str) -> list[str]:
    return [args for instr, args in _dockerfile_instructions() if instr == name]


def _exec_or_shell(args: str) -> list[str]:
    """Arguments of CMD/ENTRYPOINT/RUN, in exec (JSON) or shell form."""
    import json

    if args.startswith("["):
        return json.loads(args)
    return ["sh", "-c", args]


def _command_argv(command) -> list[str]:
    """A compose `command` (list or string) as an argv list."""
    return list(command) if isinstance(command, list) else shlex.split(command)


def _shell_tokens(script: str) -> list[str]:
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def _python_invocations(argv: list[str]) -> list[tuple[str, list[str]]]:
    """Every `python -m MODULE ARGS...` in argv, looking inside `sh -c` scripts too."""
    if len(argv) >= 3 and Path(argv[0]).name in {"sh", "bash"} and argv[1] == "-c":
        tokens = _shell_tokens(argv[2])
    else:
        tokens = argv
    found = []
    for i, tok in enumerate(tokens):
        if re.fullmatch(r"python(3(\.\d+)?)?", Path(tok).name) and tokens[i + 1 : i + 2] == ["-m"]:
            args = []
            for t in tokens[i + 3 :]:
                if t in SHELL_OPERATORS:
                    break
                args.append(t)
            found.append((tokens[i + 2], args))
    return found


def _flag_values(args: list[str]) -> dict[str, str]:
    """{--flag: value} for `--flag value` pairs (bare switches map to '')."""
    values = {}
    for i, a in enumerate(args):
        if a.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else ""
            values[a] = "" if nxt.startswith("--") else nxt
    return values


def _all_invocations(services) -> dict[str, list[tuple[str, list[str]]]]:
    image_cmd = _exec_or_shell(_instructions("CMD")[-1])
    return {
        name: _python_invocations(_command_argv(svc["command"]) if "command" in svc else image_cmd)
        for name, svc in services.items()
        if "build" in svc
    }


def _the_invocation(services, service: str, module: str) -> list[str]:
    calls = [args for mod, args in _all_invocations(services)[service] if mod == module]
    assert len(calls) == 1, f"service {service!r} should run `python -m {module}` exactly once"
    return calls[0]


def _workdir() -> str:
    return _instructions("WORKDIR")[-1]


# --------------------------------------------------------------------------- compose


def _check_jsonschema_cmd() -> list[str]:
    if importlib.util.find_spec("check_jsonschema") is not None:
        return [sys.executable, "-m", "check_jsonschema"]
    exe = shutil.which("check-jsonschema")
    if exe:
        return [exe]
    pytest.skip("check-jsonschema is not installed (it is in the dev extras)")


def test_compose_file_follows_the_compose_spec():
    proc = subprocess.run(
        [*_check_jsonschema_cmd(), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_project_services_build_the_one_image_from_docker_dockerfile(services):
    built = {name: svc for name, svc in services.items() if "build" in svc}
    assert {"train", "indexer", "api"} <= set(built)
    images = {svc.get("image") for svc in built.values()}
    assert len(images) == 1, f"all project services should share one image tag, got {images}"
    for name, svc in built.items():
        build = svc["build"]
        assert (ROOT / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name


def test_every_python_module_the_containers_run_exists(services):
    invocations = _all_invocations(services)
    modules = {mod for calls in invocations.values() for mod, _ in calls}
    assert {"training", "index", "service"} <= modules, invocations
    for mod in modules:
        path = ROOT.joinpath(*mod.split(".")) / "__main__.py"
        assert path.is_file(), f"`python -m {mod}` is run in a container but {path} does not exist"


def test_files_the_jobs_read_from_the_image_are_in_the_repository(services):
    """`/app/...` arguments name files copied from the repo: they must exist here."""
    workdir = _workdir().rstrip("/") + "/"
    checked = 0
    for calls in _all_invocations(services).values():
        for _, args in calls:
            for arg in args:
                if arg.startswith(workdir):
                    assert (ROOT / arg[len(workdir):]).exists(), f"{arg} is not in the repository"
                    checked += 1
    assert checked, "expected the jobs to read sample data shipped in the image"


def test_each_stage_reads_what_the_previous_one_wrote(services):
    train = _flag_values(_the_invocation(services, "train", "training"))
    build = _flag_values(_the_invocation(services, "indexer", "index"))
    api_env = services["api"]["environment"]

    assert train["--out"] == build["--encoder"] == api_env["LOOKALIKE_ENCODER"]
    assert build["--out"] == api_env["LOOKALIKE_INDEX"]
    assert build["--database-url"] == api_env["LOOKALIKE_DATABASE_URL"]
    assert api_env["LOOKALIKE_HOST"] == "0.0.0.0", "the service must listen beyond the container's loopback"

    # The artefacts live on a volume mounted in all three containers.
    def mounts(name):
        return {
            v.split(":")[1] if isinstance(v, str) else v["target"]
            for v in services[name].get("volumes", [])
        }

    shared = mounts("train") & mounts("indexer") & mounts("api")
    for path in (train["--out"], build["--out"]):
        assert any(path.startswith(m.rstrip("/") + "/") for m in shared), f"{path} is not on a shared volume"

    # The trainer only skips work when the file it would write is already there.
    script = _command_argv(services["train"]["command"])[-1]
    assert f"-f {train['--out']}" in script


def test_database_url_points_at_the_compose_database(services):
    url = services["api"]["environment"]["LOOKALIKE_DATABASE_URL"]
    m = re.fullmatch(r"postgresql\+psycopg://(?P<user>[^:]+):(?P<pw>[^@]+)@(?P<host>[^:/]+):5432/(?P<db>\w+)", url)
    assert m, url
    db_env = services["db"]["environment"]
    assert m["host"] == "db"
    assert (m["user"], m["pw"], m["db"]) == (
        db_env["POSTGRES_USER"], db_env["POSTGRES_PASSWORD"], db_env["POSTGRES_DB"])


def test_start_order_conditions_can_be_met(services):
    """Compose accepts conditions that can never come true; catch them here."""
    image_has_healthcheck = bool(_instructions("HEALTHCHECK"))
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            target = services[dep]
            cond = spec["condition"]
            if cond == "service_healthy":
                hc = target.get("healthcheck", {})
                has_hc = not hc.get("disable") and ("test" in hc or ("build" in target and image_has_healthcheck))
                assert has_hc, f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
            elif cond == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{name} waits for {dep} to finish, but it restarts"
                assert target.get("healthcheck", {}).get("disable"), f"one-shot {dep} should not be health-probed"

    assert services["indexer"]["depends_on"] == {
        "train": {"condition": "service_completed_successfully"},
        "db": {"condition": "service_healthy"},
    }
    assert services["api"]["depends_on"]["indexer"] == {"condition": "service_completed_successfully"}
    assert "8000:8000" in [str(p) for p in services["api"]["ports"]]


def test_the_clis_accept_every_flag_compose_passes(services):
    """Run `python -m MODULE SUBCOMMAND --help` and look for each flag compose uses."""
    for service, calls in _all_invocations(services).items():
        for module, args in calls:
            flags = {a.split("=")[0] for a in args if a.startswith("--")}
            if not flags:
                continue
            sub = []
            for a in args:
                if a.startswith("-"):
                    break
                sub.append(a)
            proc = subprocess.run(
                [sys.executable, "-m", module, *sub, "--help"],
                capture_output=True, text=True, cwd=ROOT, timeout=300,
            )
            assert proc.returncode == 0, (f"{service}: `python -m {module} {' '.join(sub)} --help` failed:\n"
                                          f"{proc.stderr}")
            known = set(re.findall(r"--[A-Za-z0-9][A-Za-z0-9-]*", proc.stdout))
            assert flags <= known, f"{service}: `python -m {module} {' '.join(sub)}` has no {sorted(flags - known)}"


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_with_the_same_make_install_as_ci():
    runs = _instructions("RUN")
    assert any(re.search(r"(^|[\s;&|])make install(\s|$)", r) for r in runs), runs
    for r in runs:
        assert not re.search(r"\b(pip3?|uv)\s+install\b", r), f"install through `make install`, not: {r}"
    makefile = ROOT / "Makefile"
    if makefile.exists():
        assert re.search(r"^install:", makefile.read_text(), re.M), "Makefile has no `install` target"


def test_dockerfile_python_matches_the_project():
    base = _instructions("FROM")[0]
    m = re.match(r"python:(\d+)\.(\d+)", base)
    assert m, base
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.search(r">=\s*(\d+)\.(\d+)", requires)
    assert low and (int(m[1]), int(m[2])) >= (int(low[1]), int(low[2])), (base, requires)


def test_dockerfile_runtime_is_unprivileged_with_data_volume_and_service_cmd():
    instrs = _dockerfile_instructions()
    names = [i for i, _ in instrs]
    users = _instructions("USER")
    assert users and users[-1] not in {"root", "0", "0:0"}
    assert names.index("CMD") > len(names) - 1 - names[::-1].index("USER"), "CMD should come after USER"

    assert any("/data" in v for v in _instructions("VOLUME"))
    assert _exec_or_shell(_instructions("CMD")[-1]) == ["python", "-m", "service"]
    env = " ".join(_instructions("ENV"))
    assert re.search(r"LOOKALIKE_HOST=0\.0\.0\.0", env)


def test_healthcheck_probes_healthz_without_curl():
    (hc,) = _instructions("HEALTHCHECK")
    assert "/healthz" in hc and "urllib" in hc
    assert not re.search(r"\b(curl|wget)\b", hc)
    # The probe is valid Python.
    code = hc.split('python -c "', 1)[1].rsplit('"', 1)[0]
    compile(code, "<healthcheck>", "exec")


def test_dockerignore_keeps_host_artefacts_out_of_the_image():
    entries = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for required in (".venv", "data", ".git"):
        assert required in entries, f".dockerignore should exclude {required}"
    assert any("__pycache__" in e for e in entries)
    # ...but nothing the image needs is excluded.
    for needed in ("samples", "core", "training", "index", "service", "pyproject.toml", "Makefile"):
        assert needed not in entries

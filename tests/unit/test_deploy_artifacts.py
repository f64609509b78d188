"""The deployment files in deploy/ checked statically (no container engine or cluster runs here): they
parse, every SCALEOUT_* variable is a real setting, every `scaleout` command line and flag exists,
every file the Dockerfile copies exists, and ports and service addresses agree with each other."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from scaleout.cli.main import cli
from scaleout_server.settings import ENV_PREFIX, ServerSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
SERVER_VARS = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(ServerSettings)}
# what the client side reads (scaleout/ and scaleoututil/ sources): the edge-client image may set these
CLIENT_VARS = {m for folder in ("scaleout", "scaleoututil") for path in (ROOT / folder).rglob("*.py")
               for m in re.findall(r"\bSCALEOUT_[A-Z_]+\b", path.read_text())}
DEFAULTS = ServerSettings()
URL = re.compile(r"https?://([A-Za-z0-9.-]+):(\d+)")
SERVER_IMAGE = "scaleout-edge-server"


# -- the Dockerfile --------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)

    def all(self, keyword: str) -> list[str]:
        return [text for kw, text in self.instructions if kw == keyword]

    def exec_form(self, keyword: str) -> list[str]:
        found = self.all(keyword)
        return json.loads(found[-1]) if found else []

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for text in self.all("ENV"):
            for token in shlex.split(text):
                key, _, value = token.partition("=")
                out[key] = value
        return out


def dockerfile_stages() -> dict[str, Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            assert len(parts) == 3 and parts[1].upper() == "AS", f"every stage is named: FROM {rest}"
            current = Stage(parts[2], parts[0])
            stages[current.name] = current
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            (current.args if current is not None else global_args)[name] = default
        elif current is None:
            raise AssertionError(f"{keyword} before the first FROM")
        else:
            current.instructions.append((keyword, rest))
    for stage in stages.values():
        stage.args = {**global_args, **stage.args}
    return stages


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def test_the_dockerfile_has_a_server_and_an_edge_client_stage_built_from_earlier_stages() -> None:
    stages = dockerfile_stages()
    assert {"server", "edge-client"} <= set(stages)
    names = list(stages)
    for index, stage in enumerate(stages.values()):
        base = expand(stage.base, stage.args)
        assert base in names[:index] or ":" in base, f"stage {stage.name}: unknown base {stage.base}"
        for text in stage.all("COPY"):
            source = re.search(r"--from=(\S+)", text)
            if source:
                assert source.group(1) in names[:index], f"COPY --from={source.group(1)}: no earlier stage"


def test_the_server_image_installs_the_server_extra_and_the_edge_client_image_does_not() -> None:
    stages = dockerfile_stages()

    def installs(target: str) -> list[str]:
        """The pip install lines of the stage whose venv `target` copies, and of that stage's bases."""
        source = next(re.search(r"--from=(\S+)", t).group(1) for t in stages[target].all("COPY") if "--from=" in t)
        lines: list[str] = []
        while source in stages:
            lines += [t for t in stages[source].all("RUN") if "pip install" in t]
            source = stages[source].base
        return lines

    assert any(".[server]" in line for line in installs("server")), installs("server")
    assert installs("edge-client") and not any("[server" in line for line in installs("edge-client"))


def test_every_file_the_dockerfile_copies_exists_and_is_not_ignored() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].strip() for line in ignore if line.startswith("!")}
    copied = 0
    for stage in dockerfile_stages().values():
        for text in stage.all("COPY"):
            if "--from=" in text:
                continue
            *sources, _dest = [t for t in shlex.split(text) if not t.startswith("--")]
            for source in sources:
                path = expand(source, stage.args)
                assert (ROOT / path).exists(), f"COPY {source}: {path} does not exist in the build context"
                assert path.split("/")[0] in kept, f"COPY {source}: excluded by Dockerfile.dockerignore"
                copied += 1
    assert copied >= 5


def test_dockerfile_environment_and_commands_are_real_settings_and_commands() -> None:
    stages = dockerfile_stages()
    server, client = stages["server"], stages["edge-client"]
    assert {k for k in server.env() if k.startswith(ENV_PREFIX)} <= SERVER_VARS
    assert {k for k in client.env() if k.startswith(ENV_PREFIX)} <= CLIENT_VARS
    assert server.exec_form("ENTRYPOINT") + server.exec_form("CMD") == ["scaleout", "controller", "start"]
    check_cli(server.exec_form("ENTRYPOINT")[1:] + server.exec_form("CMD"))
    check_cli(client.exec_form("ENTRYPOINT")[1:] + client.exec_form("CMD"))
    for stage in stages.values():
        for text in stage.all("RUN"):
            if text.startswith("scaleout "):
                check_cli(shlex.split(text)[1:])
    exposed = {int(p) for text in server.all("EXPOSE") for p in text.split()}
    assert {DEFAULTS.api_port, DEFAULTS.combiner_port} <= exposed
    assert server.env()["SCALEOUT_DATA_DIR"] in server.all("VOLUME")[0]


# -- command lines ---------------------------------------------------------------------------------
def check_cli(args: list[str]) -> click.Command:
    """`args` (after `scaleout`) name a command, and every option given is one of its options."""
    command: click.Command = cli
    rest = list(args)
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    assert not isinstance(command, click.Group), f"`scaleout {' '.join(args)}` names no command"
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for token in rest:
        if token.startswith("-"):
            assert token.split("=")[0] in known, f"`scaleout {' '.join(args)}`: no option {token}"
    return command


def option_value(args: list[str], *names: str) -> str | None:
    for index, token in enumerate(args):
        if token in names and index + 1 < len(args):
            return args[index + 1]
        for name in names:
            if token.startswith(name + "="):
                return token.split("=", 1)[1]
    return None


def listening_port(args: list[str], env: dict[str, str]) -> int | None:
    """The port a `scaleout controller|combiner start` command listens on: flag, else setting, else default."""
    if args[:2] == ["controller", "start"]:
        return int(option_value(args, "--api-port") or env.get("SCALEOUT_API_PORT") or DEFAULTS.api_port)
    if args[:2] == ["combiner", "start"]:
        return int(option_value(args, "--port") or env.get("SCALEOUT_COMBINER_PORT") or DEFAULTS.combiner_port)
    return None


def scaleout_args(command: list[str]) -> tuple[list[str], set[str]]:
    """The `scaleout ...` arguments inside a shell script (`sh -c "... && exec scaleout ..."`) and the
    variables the script reads."""
    script = " ".join(command)
    variables = set(re.findall(r"\$\{?([A-Za-z_]\w*)", script))
    words = shlex.split(script.split("exec scaleout", 1)[1] if "exec scaleout" in script else "")
    return [w for w in words if w not in ("&&", ";")], variables


# -- docker-compose.yaml ---------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict) and isinstance(loaded.get("services"), dict)
    return loaded


def compose_args(service: dict[str, Any]) -> list[str]:
    """The `scaleout` arguments a service runs: the image's entry point (after `scaleout`) + command."""
    stage = dockerfile_stages()[service["build"]["target"]] if "build" in service else None
    entry = stage.exec_form("ENTRYPOINT")[1:] if stage is not None else []
    return entry + list(service.get("command") or (stage.exec_form("CMD") if stage is not None else []))


def scaleout_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in doc["services"].items() if "build" in s}


def env_file_names() -> tuple[set[str], set[str]]:
    """Names set in deploy/example.env, and names only mentioned there in comments."""
    set_names, mentioned = set(), set()
    for line in (DEPLOY / "example.env").read_text().splitlines():
        match = re.match(r"#?\s*([A-Z][A-Z0-9_]*)=", line.strip())
        if match:
            (mentioned if line.strip().startswith("#") else set_names).add(match.group(1))
    return set_names, mentioned


def test_compose_runs_a_controller_two_combiners_a_database_and_an_object_store() -> None:
    doc = compose()
    services = doc["services"]
    runs = {name: compose_args(s)[:2] for name, s in scaleout_services(doc).items()}
    assert list(runs.values()).count(["controller", "start"]) == 1
    assert list(runs.values()).count(["combiner", "start"]) == 2
    assert services["postgres"]["image"].startswith("postgres:15")
    assert "weed server" in " ".join(services["seaweedfs"]["command"]) and "-s3" in services["seaweedfs"]["command"][0]
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in (doc.get("volumes") or {}), f"{name}: volume {source} is not declared"


def test_compose_settings_commands_and_interpolations_exist() -> None:
    doc = compose()
    stages = dockerfile_stages()
    set_names, mentioned = env_file_names()
    for name, service in scaleout_services(doc).items():
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] in stages
        for key, value in (build.get("args") or {}).items():
            assert key in stages[build["target"]].args
            assert (ROOT / value / "client" / "scaleout.yaml").exists(), f"{name}: PROJECT {value} has no client/"
        env = service.get("environment") or {}
        allowed = SERVER_VARS if build["target"] == "server" else CLIENT_VARS
        assert {k for k in env if k.startswith(ENV_PREFIX)} <= allowed, f"{name}: unknown SCALEOUT_* variable"
        args = compose_args(service)
        command = check_cli(args)
        if args[:2] == ["combiner", "start"]:
            assert option_value(args, "--controller") or env.get("SCALEOUT_CONTROLLER_URL"), name
            assert option_value(args, "--name"), f"{name}: every combiner needs its own --name"
        if command.name == "start" and args[0] == "client":
            assert option_value(args, "--api-url", "-u"), f"{name}: a client needs --api-url"
    text = COMPOSE.read_text()
    for variable, kind in re.findall(r"\$\{([A-Z][A-Z0-9_]*)(:[?-])?", text):
        if kind == ":?":
            assert variable in set_names, f"${{{variable}}} is required but not in deploy/example.env"
        else:
            assert variable in set_names | mentioned, f"${{{variable}}} is not described in deploy/example.env"


def test_compose_ports_and_service_addresses_agree() -> None:
    doc = compose()
    services = doc["services"]
    listening: dict[str, int] = {"postgres": 5432}
    for name, service in scaleout_services(doc).items():
        port = listening_port(compose_args(service), service.get("environment") or {})
        if port is not None:
            listening[name] = port
    s3_port = re.search(r"-s3\.port=(\d+)", services["seaweedfs"]["command"][0])
    assert s3_port is not None
    listening["seaweedfs"] = int(s3_port.group(1))
    byte_ports = {name: int(port) for name, service in scaleout_services(doc).items()
                  if (port := option_value(compose_args(service), "--byte-port")) and int(port) > 0}
    published: list[str] = []
    for name, service in services.items():
        for mapping in service.get("ports") or []:
            host, _, container = str(mapping).split("#")[0].strip().rpartition(":")
            assert int(container) in (listening[name], byte_ports.get(name)), \
                f"{name} publishes {mapping} but listens on {listening[name]}"
            published.append(host)
    for name, port in byte_ports.items():  # a fixed byte port is published, or clients fall back to gRPC
        assert any(str(m).endswith(f":{port}") for m in services[name].get("ports") or []), name
        blob = json.dumps({k: service.get(k) for k in ("command", "environment", "healthcheck")})
        for host, port in URL.findall(blob):
            target = name if host in ("127.0.0.1", "localhost") else host
            assert target in listening, f"{name} refers to unknown service {host}"
            assert int(port) == listening[target], f"{name}: {host}:{port}, but {target} listens on {listening[target]}"
        store_url = (service.get("environment") or {}).get("SCALEOUT_STORE_URL")
        if store_url:
            assert "@postgres:5432/" in store_url
    assert len(published) == len(set(published)), f"host ports published twice: {published}"


# -- Kubernetes manifests --------------------------------------------------------------------------
def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                assert isinstance(doc, dict) and doc.get("kind") and doc.get("apiVersion"), f"{path.name}: bad doc"
                doc["_file"] = path.name
                docs.append(doc)
    return docs


def by_kind(docs: list[dict[str, Any]], *kinds: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in kinds}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def container_args(container: dict[str, Any]) -> tuple[list[str], set[str]]:
    """The `scaleout` arguments of a server-image container and the variables a shell wrapper reads."""
    command = container.get("command")
    if command and command[:2] == ["/bin/sh", "-c"]:
        return scaleout_args(container["args"])
    assert not command, "server containers keep the image's `scaleout` entry point or use /bin/sh -c"
    return list(container.get("args") or dockerfile_stages()["server"].exec_form("CMD")), set()


def container_env(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
    config_maps = by_kind(docs, "ConfigMap")
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    return env


def test_kubernetes_manifests_are_complete_and_listed_in_the_kustomization() -> None:
    docs = manifests()
    for doc in docs:
        assert doc.get("metadata", {}).get("name") or doc["kind"] == "Kustomization", doc["_file"]
    (kustomization,) = [d for d in docs if d["kind"] == "Kustomization"]
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    workloads = by_kind(docs, "Deployment", "StatefulSet")
    commands = [container_args(c)[0][:2] for w in workloads.values() for c in containers(w)
                if c["image"] == SERVER_IMAGE]
    assert commands.count(["controller", "start"]) == 1 and ["server", "migrate"] in commands
    (combiners,) = [w for w in workloads.values() if any(container_args(c)[0][:2] == ["combiner", "start"]
                                                         for c in containers(w) if c["image"] == SERVER_IMAGE)]
    assert combiners["kind"] == "StatefulSet" and combiners["spec"]["replicas"] >= 2


def test_kubernetes_settings_commands_and_references_exist() -> None:
    docs = manifests()
    secrets = by_kind(docs, "Secret")
    claims = set(by_kind(docs, "PersistentVolumeClaim"))
    for config_map in by_kind(docs, "ConfigMap").values():
        assert {k for k in config_map["data"] if k.startswith(ENV_PREFIX)} <= SERVER_VARS
    for name, workload in by_kind(docs, "Deployment", "StatefulSet").items():
        template = workload["spec"]["template"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        volumes = {v["name"] for v in template["spec"].get("volumes", [])} | templates
        for container in containers(workload):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}: mount of unknown volume {mount['name']}"
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], f"{name}: no secret key {ref}"
            if container["image"] != SERVER_IMAGE:
                continue
            env = container_env(container, docs)
            args, variables = container_args(container)
            assert {k for k in env if k.startswith(ENV_PREFIX)} <= SERVER_VARS, f"{name}: unknown setting"
            assert {v for v in variables if v.startswith(ENV_PREFIX)} <= SERVER_VARS
            assert {v for v in variables if not v.startswith(ENV_PREFIX)} <= set(env), f"{name}: undefined {variables}"
            check_cli(args)
            if args[:2] == ["combiner", "start"]:
                assert option_value(args, "--controller") or env.get("SCALEOUT_CONTROLLER_URL")


def test_kubernetes_ports_and_service_addresses_agree() -> None:
    docs = manifests()
    workloads = by_kind(docs, "Deployment", "StatefulSet")
    service_ports: dict[str, set[int]] = {}
    for name, service in by_kind(docs, "Service").items():
        selector = service["spec"]["selector"]
        (workload,) = [w for w in workloads.values()
                       if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        ports = {p.get("name"): p["containerPort"] for c in workload["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports or target in ports.values(), f"service {name}: no container port {target}"
            assert ports.get(target, target) == port["port"], f"service {name}: {port['port']} -> {target}"
        service_ports[name] = {p["port"] for p in service["spec"]["ports"]}
    for name, workload in workloads.items():
        for container in containers(workload):
            if container["image"] != SERVER_IMAGE:
                continue
            args, _ = container_args(container)
            port = listening_port(args, container_env(container, docs))
            if port is not None:
                assert port in {p["containerPort"] for p in container.get("ports", [])}, f"{name} listens on {port}"
    texts = [json.dumps(d.get("data", {})) + json.dumps(d.get("stringData", {})) for d in docs]
    texts += [json.dumps(c) for w in workloads.values() for c in containers(w)]
    found = 0
    for text in texts:
        for host, port in URL.findall(text) + re.findall(r"@([a-z0-9-]+):(\d+)/", text):
            service = host.split(".")[0]
            assert service in service_ports, f"unknown service {host}"
            assert int(port) in service_ports[service], f"{host}:{port}: service {service} has {service_ports[service]}"
            found += 1
    assert found >= 3


def test_deploy_yaml_is_well_formed_without_tabs() -> None:
    # one test for all files: parametrized ids would carry file names into `pytest -k` selections
    for path in [COMPOSE, *sorted(KUBERNETES.glob("*.yaml"))]:
        text = path.read_text()
        assert "\t" not in text, path.name
        assert list(yaml.safe_load_all(text)), path.name

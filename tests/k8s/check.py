#!/usr/bin/env python3
"""Offline checks of the YAML `kplug k8s` prints, driven by tests/k8s.rs.

    check.py JOB.json

JOB.json holds:
  objects:           YAML files of objects to validate (core kinds with kubernetes-validate,
                     strict; Kong Operator kinds against tests/fixtures/kong-operator/)
  patches:           [{patch, out, configmaps?, tree?}]: `kubectl patch --local` of a minimal
                     Kong Deployment with the strategic-merge patch, the result validated and
                     written to `out`; with `configmaps`, the Kong container's mounted tree is
                     rebuilt from the ConfigMaps into the directory `tree`
  helm_configmaps:   [{values, configmaps, out, tree}]: the kong chart's rendering of
                     plugins.configMaps re-done (templates/_helpers.tpl, kong.volumes and
                     kong.volumeMounts), validated, and the tree rebuilt into `tree`
  helm_init:         [{values, out}]: the chart's deployment.initContainers,
                     userDefinedVolumes/userDefinedVolumeMounts and env re-done, validated

Exits 1 with every problem found on stderr.
"""
import base64
import copy
import json
import os
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "kong-operator")
K8S_VERSION = "1.33.0"
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_CONFIGMAP = 1 << 20

problems = []


def problem(msg):
    problems.append(msg)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def strict(schema):
    """CRD schemas prune unknown fields; refuse them instead, to catch misspelt fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas():
    out = {}
    for name in os.listdir(FIXTURES):
        if name.endswith(".json"):
            with open(os.path.join(FIXTURES, name)) as f:
                d = json.load(f)
            out[(d["group"] + "/" + d["version"], d["kind"])] = strict(d["openAPIV3Schema"])
    return out


CRDS = crd_schemas()


def validate_object(doc, where):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRDS:
        errors = sorted(
            jsonschema.Draft7Validator(CRDS[key]).iter_errors(doc), key=lambda e: list(e.path)
        )
        for e in errors:
            problem(f"{where}: {doc['kind']}: {'/'.join(map(str, e.path))}: {e.message}")
        check_name(doc, where)
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        problem(f"{where}: {doc.get('kind')}: {'/'.join(map(str, e.path))}: {e.message}")
        return
    except kubernetes_validate.SchemaNotFoundError as e:
        problem(f"{where}: no schema for {key}: {e}")
        return
    check_name(doc, where)
    if doc["kind"] == "ConfigMap":
        check_configmap(doc, where)
    if doc["kind"] == "Deployment":
        check_pod(doc["spec"]["template"]["spec"], where)


def check_name(doc, where):
    name = doc["metadata"]["name"]
    # Object names are DNS subdomains; the ones kplug renders are labels (volume names too).
    if not DNS_LABEL.match(name):
        problem(f"{where}: {doc['kind']} name {name!r} is not a DNS-1123 label")


def check_configmap(cm, where):
    """apimachinery IsConfigMapKey, and ValidateConfigMap's 1 MiB total."""
    total = 0
    for field in ("data", "binaryData"):
        for k, v in (cm.get(field) or {}).items():
            if not CONFIGMAP_KEY.match(k) or len(k) > 253 or k in (".", "..") or k.startswith(".."):
                problem(f"{where}: ConfigMap {cm['metadata']['name']}: invalid key {k!r}")
            total += len(k) + (len(v.encode()) if field == "data" else len(base64.b64decode(v)))
    if total > MAX_CONFIGMAP:
        problem(f"{where}: ConfigMap {cm['metadata']['name']} holds {total} bytes > 1 MiB")


def check_pod(pod, where):
    """What schema validation cannot see: mounts refer to volumes, names are unique."""
    volumes = [v["name"] for v in pod.get("volumes", [])]
    if len(set(volumes)) != len(volumes):
        problem(f"{where}: duplicate volume names {volumes}")
    for v in volumes:
        if not DNS_LABEL.match(v) or len(v) > 63:
            problem(f"{where}: volume name {v!r} is not a DNS-1123 label")
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                problem(f"{where}: container {c['name']} mounts unknown volume {m['name']}")
        for v in pod.get("volumes", []):
            for src in v.get("projected", {}).get("sources", []):
                for it in src.get("configMap", {}).get("items", []):
                    p = it["path"]
                    if p.startswith("/") or ".." in p.split("/"):
                        problem(f"{where}: item path {p!r} escapes the volume")


def base_deployment():
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "kong"},
        "spec": {
            "selector": {"matchLabels": {"app": "kong"}},
            "template": {
                "metadata": {"labels": {"app": "kong"}},
                "spec": {
                    "containers": [
                        {
                            "name": "proxy",
                            "image": "kong:3.9",
                            "env": [{"name": "KONG_DATABASE", "value": "off"}],
                        }
                    ]
                },
            },
        },
    }


def kubectl_patch(patch_file, work):
    base = os.path.join(work, "base-deployment.yaml")
    with open(base, "w") as f:
        yaml.safe_dump(base_deployment(), f)
    env = dict(os.environ, HOME=work, KUBECONFIG=os.path.join(work, "no-kubeconfig"))
    r = subprocess.run(
        ["kubectl", "patch", "--local", "-f", base, "--type", "strategic",
         "--patch-file", patch_file, "-o", "yaml"],
        capture_output=True, text=True, env=env,
    )
    if r.returncode != 0:
        problem(f"{patch_file}: kubectl patch --local failed: {r.stderr.strip()}")
        return None
    return yaml.safe_load(r.stdout)


def configmaps_by_name(path):
    return {d["metadata"]["name"]: d for d in load_docs(path) if d.get("kind") == "ConfigMap"}


def cm_bytes(cm, key):
    if key in (cm.get("data") or {}):
        return cm["data"][key].encode()
    if key in (cm.get("binaryData") or {}):
        return base64.b64decode(cm["binaryData"][key])
    return None


def write(tree, rel, content):
    path = os.path.join(tree, rel.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


def rebuild(pod, container, cms, tree, where):
    """Write what the container sees under its mounts, as the kubelet would project it."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    c = next(c for c in pod["containers"] if c["name"] == container)
    for m in sorted(c.get("volumeMounts", []), key=lambda m: len(m["mountPath"])):
        v = volumes[m["name"]]
        if "projected" in v:
            sources = [s["configMap"] for s in v["projected"]["sources"]]
        elif "configMap" in v:
            sources = [v["configMap"]]
        else:
            continue
        for src in sources:
            cm = cms.get(src["name"])
            if cm is None:
                problem(f"{where}: volume {m['name']} needs ConfigMap {src['name']}, not rendered")
                continue
            keys = list((cm.get("data") or {})) + list((cm.get("binaryData") or {}))
            items = src.get("items") or [{"key": k, "path": k} for k in keys]
            listed = {it["key"] for it in items}
            if set(keys) - listed:
                problem(f"{where}: keys of {src['name']} not projected: {set(keys) - listed}")
            for it in items:
                content = cm_bytes(cm, it["key"])
                if content is None:
                    problem(f"{where}: {src['name']} has no key {it['key']}")
                    continue
                write(tree, m["mountPath"] + "/" + it["path"], content)


def chart_configmap_mounts(values):
    """kong chart templates/_helpers.tpl: kong.volumes / kong.volumeMounts / kong.plugins."""
    volumes, mounts, names = [], [], ["bundled"]
    for p in values["plugins"]["configMaps"]:
        root = "/opt/kong/plugins/" + p["pluginName"]
        volumes.append({"name": "kong-plugin-" + p["pluginName"], "configMap": {"name": p["name"]}})
        mounts.append({"name": "kong-plugin-" + p["pluginName"], "mountPath": root, "readOnly": True})
        for sd in p.get("subdirectories") or []:
            volumes.append({"name": sd["name"], "configMap": {"name": sd["name"]}})
            mounts.append({"name": sd["name"], "mountPath": root + "/" + (sd.get("path") or sd["name"]),
                           "readOnly": True})
        names.append(p["pluginName"])
    env = [{"name": "KONG_PLUGINS", "value": ",".join(names)},
           {"name": "KONG_LUA_PACKAGE_PATH", "value": "/opt/?.lua;/opt/?/init.lua;;"}]
    return volumes, mounts, env


def with_pod(volumes, mounts, env, init=None):
    d = base_deployment()
    pod = d["spec"]["template"]["spec"]
    pod["volumes"] = volumes
    pod["containers"][0]["volumeMounts"] = mounts
    pod["containers"][0]["env"] += env
    if init:
        pod["initContainers"] = init
    return d


def chart_init(values):
    """deployment.yaml: initContainers / userDefinedVolumes verbatim (toYaml), the proxy
    container's userDefinedVolumeMounts, and env.<key> as KONG_<KEY>."""
    dep = values["deployment"]
    env = [{"name": "KONG_" + k.upper(), "value": v} for k, v in values.get("env", {}).items()]
    return with_pod(dep["userDefinedVolumes"], dep["userDefinedVolumeMounts"], env,
                    dep["initContainers"])


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    work = os.path.dirname(os.path.abspath(job_path))
    for path in job.get("objects", []):
        for i, doc in enumerate(load_docs(path)):
            validate_object(doc, f"{path}#{i}")
    for p in job.get("patches", []):
        merged = kubectl_patch(p["patch"], work)
        if merged is None:
            continue
        with open(p["out"], "w") as f:
            yaml.safe_dump(merged, f)
        validate_object(merged, p["out"])
        if "configmaps" in p:
            rebuild(merged["spec"]["template"]["spec"], "proxy",
                    configmaps_by_name(p["configmaps"]), p["tree"], p["patch"])
    for h in job.get("helm_configmaps", []):
        (values,) = load_docs(h["values"])
        d = with_pod(*chart_configmap_mounts(values))
        with open(h["out"], "w") as f:
            yaml.safe_dump(d, f)
        validate_object(d, h["out"])
        rebuild(d["spec"]["template"]["spec"], "proxy", configmaps_by_name(h["configmaps"]),
                h["tree"], h["values"])
    for h in job.get("helm_init", []):
        (values,) = load_docs(h["values"])
        d = chart_init(values)
        with open(h["out"], "w") as f:
            yaml.safe_dump(d, f)
        validate_object(d, h["out"])
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])

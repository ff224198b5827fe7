"""``pirag doctor``: what a Pi owner (or a bug report) needs when embedding is slow or the daemon crashes.

It runs daemon code in its own process (no daemon needed) and, when a daemon answers, reads its ``status`` for
what that daemon actually uses. Sections:

- ``llama_cpp``: the llama-cpp-python version, whether the build is portable (run-time CPU variants) or for one
  CPU, the variant this CPU gets, and ``llama_print_system_info()`` (the features the loaded CPU code uses);
- ``cpu``: the CPU model and the flags that decide llama.cpp's speed (AVX2/AVX512/AMX, ARM dotprod/fp16/i8mm);
- ``amx``: the AMX decision (``$PIRAG_CPU_AMX`` over /proc/cpuinfo) and so ``use_extra_bufts``;
- ``memory_cgroup``: whether MemoryMax/MemoryHigh can be enforced (Raspberry Pi kernels disable it);
- ``model``: the model file, its quantisation, dims and context length;
- ``state_dir``: where the databases live and the free space there.

Each finding that needs action is listed under ``problems`` (exit 1) or ``warnings``.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

from .config import Config

# Flags worth naming: x86 SIMD levels ggml's variants are built for; ARM features of the Pi 4 / Pi 5 paths.
INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                     "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "fphp", "asimdhp", "i8mm", "sve", "sve2")
LOW_FREE_BYTES = 512 << 20


def cpu_section() -> dict[str, Any]:
    model, flags = platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and model == platform.machine():
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"arch": platform.machine(), "model": model, "cpus": len(os.sched_getaffinity(0)),
            "flags": [flag for flag in INTERESTING_FLAGS if flag in flags]}


def llama_section() -> dict[str, Any]:
    from .embed import llama

    try:
        import llama_cpp

        info = llama.system_info()
    except Exception as exc:  # noqa: BLE001 - a broken install is what doctor must report, not crash on
        return {"error": f"{type(exc).__name__}: {exc}"}
    variants = llama.cpu_variants()
    return {"version": getattr(llama_cpp, "__version__", "?"), "library_dir": str(llama.library_dir()),
            "build": "portable (CPU variants chosen at run time)" if variants else "one CPU target",
            "cpu_variants": variants, "cpu_variant_loaded": llama.loaded_cpu_variant(),
            "cpu_variant_forced": os.environ.get(llama.VARIANT_ENV) or None, "system_info": info}


def amx_section(config: Config) -> dict[str, Any]:
    from .embed import llama

    forced = os.environ.get(llama.AMX_ENV) or None
    try:
        decided = llama.cpu_has_amx()
    except ValueError as exc:
        return {"error": str(exc), "env": forced}
    setting = config.embed.extra_buffer_types
    use_extra = (not decided) if setting == "auto" else setting == "on"
    return {"cpu_flags_amx": llama._cpuinfo_has_amx(), "env": forced, "treated_as_amx": decided,
            "extra_buffer_types_setting": setting, "use_extra_bufts": use_extra}


def cgroup_section() -> dict[str, Any]:
    from .systemd import memory_cgroup_available

    figures: dict[str, Any] = {"controller_enabled": memory_cgroup_available()}
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()[-1].split(":", 2)[2]
        limit = Path("/sys/fs/cgroup") / own.lstrip("/") / "memory.max"
        figures["this_process_memory_max"] = limit.read_text().strip() if limit.exists() else None
    except (OSError, IndexError):
        pass
    return figures


def model_section(config: Config, status: Any | None) -> dict[str, Any]:
    from .embed.default_model import default_model_path
    from .embed.importer import describe

    if status is not None and (status.components.get("embed") or {}).get("model"):
        path, source = status.components["embed"]["model"]["path"], "the running daemon"
    elif config.embed.model:
        path, source = config.embed.model, "embed.model"
    else:
        path, source = str(default_model_path(config.state_path)), "the embedded default"
    figures: dict[str, Any] = {"path": path, "source": source}
    if not os.path.exists(path):
        figures["error"] = ("not imported yet (the daemon imports it at its first start)"
                            if source == "the embedded default" else "the file does not exist")
        return figures
    try:
        info = describe(path)
    except (OSError, ValueError) as exc:
        figures["error"] = str(exc)
        return figures
    return figures | {"quantization": info.quantization, "dims": info.dims, "context_length": info.context_length,
                      "max_tokens": info.max_tokens, "pooling": info.pooling, "size_bytes": info.size_bytes}


def state_section(config: Config, status: Any | None) -> dict[str, Any]:
    path = Path(status.state_dir if status is not None else config.state_path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return {"path": str(path), "exists": path.exists(), "free_bytes": usage.free, "total_bytes": usage.total}


def diagnose(config: Config, status: Any | None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "daemon": None if status is None else {"pid": status.pid, "state": status.state or "?",
                                               "state_detail": status.state_detail},
        "cpu": cpu_section(), "llama_cpp": llama_section(), "amx": amx_section(config),
        "memory_cgroup": cgroup_section(), "model": model_section(config, status),
        "state_dir": state_section(config, status)}
    problems: list[str] = []
    warnings: list[str] = []
    if "error" in report["llama_cpp"]:
        problems.append(f"llama.cpp does not load: {report['llama_cpp']['error']}")
    elif report["llama_cpp"]["cpu_variants"] and report["llama_cpp"]["cpu_variant_loaded"] is None:
        problems.append("no CPU variant of llama.cpp loaded")
    if "error" in report["amx"]:
        problems.append(report["amx"]["error"])
    if "error" in report["model"]:
        (warnings if report["model"]["source"] == "the embedded default" else problems).append(
            f"model {report['model']['path']}: {report['model']['error']}")
    if report["state_dir"]["free_bytes"] < LOW_FREE_BYTES:
        problems.append(f"only {report['state_dir']['free_bytes'] >> 20} MiB free under {report['state_dir']['path']}")
    if not report["memory_cgroup"]["controller_enabled"]:
        warnings.append("the memory cgroup controller is off: MemoryHigh/MemoryMax are ignored (Raspberry Pi: add "
                        "cgroup_enable=memory to /boot/firmware/cmdline.txt and reboot)")
    if status is None:
        warnings.append("no daemon answered: the model and state dir are the config's, not a running daemon's")
    report["problems"], report["warnings"] = problems, warnings
    return report


def render(report: dict[str, Any]) -> str:
    """The report for people: one block per section, then what needs action."""
    def mib(value: int) -> str:
        return f"{value / (1 << 20):,.0f} MiB"

    cpu, lib, amx, cg, model, state = (report[key] for key in
                                       ("cpu", "llama_cpp", "amx", "memory_cgroup", "model", "state_dir"))
    daemon = report["daemon"]
    daemon_line = "not reachable" if daemon is None else f"pid {daemon['pid']}, {daemon['state']}"
    lines = [f"daemon        {daemon_line}",
             f"cpu           {cpu['model']} ({cpu['arch']}, {cpu['cpus']} usable)",
             f"cpu flags     {' '.join(cpu['flags']) or 'none of interest'}"]
    if "error" in lib:
        lines.append(f"llama.cpp     ERROR {lib['error']}")
    else:
        variant = lib["cpu_variant_loaded"] or "-"
        lines += [f"llama.cpp     llama-cpp-python {lib['version']}, {lib['build']}",
                  f"cpu variant   {variant}" + (" (forced by $PIRAG_GGML_CPU_VARIANT)" if lib["cpu_variant_forced"]
                                               else "") + ("; available: " + " ".join(lib["cpu_variants"])
                                                           if lib["cpu_variants"] else ""),
                  f"system info   {lib['system_info']}"]
    if "error" in amx:
        lines.append(f"amx           ERROR {amx['error']}")
    else:
        lines.append(f"amx           cpu flags {'yes' if amx['cpu_flags_amx'] else 'no'}"
                     + (f", $PIRAG_CPU_AMX={amx['env']}" if amx["env"] else "")
                     + f"; extra_buffer_types {amx['extra_buffer_types_setting']} -> use_extra_bufts "
                     f"{'on' if amx['use_extra_bufts'] else 'off'}")
    lines.append(f"memory cgroup {'enabled' if cg['controller_enabled'] else 'DISABLED'}"
                 + (f", this process memory.max {cg['this_process_memory_max']}"
                    if cg.get("this_process_memory_max") else ""))
    if "error" in model:
        lines.append(f"model         {model['path']} ({model['source']}): {model['error']}")
    else:
        lines.append(f"model         {model['path']} ({model['source']}): {model['quantization']}, {model['dims']} "
                     f"dims, context {model['context_length']}, max {model['max_tokens']} tokens, "
                     f"{mib(model['size_bytes'])}")
    lines.append(f"state dir     {state['path']}: {mib(state['free_bytes'])} free of {mib(state['total_bytes'])}"
                 + ("" if state["exists"] else " (does not exist yet)"))
    lines += [f"PROBLEM       {item}" for item in report["problems"]]
    lines += [f"warning       {item}" for item in report["warnings"]]
    if not report["problems"]:
        lines.append("ok            no problems found")
    return "\n".join(lines)

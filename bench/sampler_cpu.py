"""CPU used by the sampler thread at the default rate (target ≤ 0.2 % of one core).

The shared meter over fake RAPL (two packages + DRAM) and two fake GPUs runs idle for
DURATION_S while the main thread sleeps; the sampler thread's own CPU time is read from its
thread CPU clock (pthread_getcpuclockid), so nothing else in the process is counted.
"""

import threading
import time

import _hardware
from _report import figure, save

DURATION_S = 20.0


def main():
    _hardware.install(rapl=True, gpus=True)
    from greenjupyter import runtime

    meter = runtime.get_meter()
    _hardware.check_components(meter)  # GPU detection (one-off set-up) is over before we start
    thread = next(t for t in threading.enumerate() if t.name == "greenjupyter-sampler")
    clock = time.pthread_getcpuclockid(thread.ident)

    cpu0, wall0, ticks0 = time.clock_gettime(clock), time.perf_counter(), len(meter.sampler.samples)
    time.sleep(DURATION_S)
    cpu1, wall1, ticks1 = time.clock_gettime(clock), time.perf_counter(), len(meter.sampler.samples)
    runtime.shutdown()

    wall, cpu, ticks = wall1 - wall0, cpu1 - cpu0, ticks1 - ticks0
    percent = cpu / wall * 100
    print(f"interval {meter.sampler.interval_s} s; over {wall:.1f} s the sampler thread used {cpu * 1e3:.2f} ms CPU "
          f"= {percent:.4f} % of one core; {ticks} ticks ({ticks / wall:.2f}/s), "
          f"{cpu / max(ticks, 1) * 1e6:.0f} µs CPU per tick")
    save("sampler_cpu", [
        figure("sampler thread CPU, % of one core", percent, "%", 0.2, 4),
        figure("sampler ticks per second", ticks / wall, "/s", digits=2),
        figure("sampler CPU per tick", cpu / max(ticks, 1) * 1e6, "µs", digits=0),
    ], {"duration_s": wall, "cpu_s": cpu, "ticks": ticks, "interval_s": meter.sampler.interval_s,
        "components": list(meter.components)})


if __name__ == "__main__":
    main()

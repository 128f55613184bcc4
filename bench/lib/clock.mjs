// The benchmarks' clock, shared by every process (loads nothing else, so a peer's child
// process can use it without the addon).

/**
 * CLOCK_MONOTONIC in ms, the same clock in every process of this machine (performance.timeOrigin
 * + now() follows the wall clock as it was at each process's start: on a VM whose clock is
 * stepped and slewed, processes started apart disagree by tens of ms).
 */
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

// Exit handling: one set of process exit and signal handlers for all labs that asked for it
// (Lab.removeOnExit), which removes them when the process ends.

/** What the handlers need of a lab. */
export interface ExitLab {
  down(): Promise<void>;
  downSync(): void;
}

const exitLabs = new Set<ExitLab>();
let handling = false;
const SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
const SIGNAL_NUMBERS: Readonly<Record<string, number>> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

function onExit(): void {
  for (const lab of exitLabs) lab.downSync();
  exitLabs.clear();
}

function onSignal(sig: NodeJS.Signals): void {
  if (handling) {
    // A second signal: give up waiting, clean up synchronously and go.
    onExit();
    process.exit(128 + (SIGNAL_NUMBERS[sig] ?? 15));
  }
  handling = true;
  void Promise.allSettled([...exitLabs].map((lab) => lab.down())).then(() =>
    process.exit(128 + (SIGNAL_NUMBERS[sig] ?? 15)),
  );
}

export function registerExit(lab: ExitLab): void {
  if (exitLabs.size === 0) {
    process.on("exit", onExit);
    for (const sig of SIGNALS) process.on(sig, onSignal);
  }
  exitLabs.add(lab);
}

export function unregisterExit(lab: ExitLab): void {
  if (!exitLabs.delete(lab) || exitLabs.size > 0 || handling) return;
  process.off("exit", onExit);
  for (const sig of SIGNALS) process.off(sig, onSignal);
}

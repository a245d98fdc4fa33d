// The page's turn between the steps of a run.

/** A promise that resolves in a new task (a MessageChannel message: no 4 ms timer clamp), so that clicks (Stop)
 *  and drawing get their turn between steps: ORT's single-threaded WASM calls resolve as microtasks, and a run
 *  that only awaits them would hold the page until it ends. */
export function nextTask() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => { channel.port1.close(); resolve(); };
    channel.port2.postMessage(null);
  });
}

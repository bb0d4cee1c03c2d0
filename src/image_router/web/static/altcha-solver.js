// The human check of the website tokens: an ALTCHA (v1) proof of work, solved here with
// WebCrypto. The server's challenge is SHA-256(salt + n) for a secret n <= maxnumber;
// finding n takes the browser a moment and costs a bot farm real work. The payload goes
// back to POST /v1/web-token as {"altcha": "<base64 JSON>"}. No third party is involved.
(() => {
  "use strict";

  const BATCH = 1000; // digests in flight at once; between batches the page stays responsive

  function hexToBytes(hex) {
    const bytes = new Uint8Array(hex.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(i * 2, 2), 16);
    return bytes;
  }

  function same(buffer, target) {
    const view = new Uint8Array(buffer);
    if (view.length !== target.length) return false;
    for (let i = 0; i < view.length; i++) if (view[i] !== target[i]) return false;
    return true;
  }

  // Resolves to the base64 payload, or rejects (AbortError when `signal` aborts).
  async function solve(challenge, signal) {
    if (!window.crypto || !window.crypto.subtle) {
      throw new Error("The human check needs a secure page (HTTPS) to run.");
    }
    const algorithm = challenge.algorithm || "SHA-256";
    const max = Number(challenge.maxnumber ?? challenge.maxNumber ?? 1000000);
    const target = hexToBytes(challenge.challenge);
    const encoder = new TextEncoder();
    const started = performance.now();
    for (let start = 0; start <= max; start += BATCH) {
      if (signal && signal.aborted) throw new DOMException("Cancelled", "AbortError");
      const end = Math.min(max, start + BATCH - 1);
      const work = [];
      for (let n = start; n <= end; n++) {
        work.push(crypto.subtle.digest(algorithm, encoder.encode(challenge.salt + n)));
      }
      const digests = await Promise.all(work);
      for (let i = 0; i < digests.length; i++) {
        if (same(digests[i], target)) {
          return btoa(JSON.stringify({
            algorithm,
            challenge: challenge.challenge,
            number: start + i,
            salt: challenge.salt,
            signature: challenge.signature,
            took: Math.round(performance.now() - started),
          }));
        }
      }
    }
    throw new Error("The human check could not be solved; reload the page and try again.");
  }

  window.altchaSolve = solve;
})();

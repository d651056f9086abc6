/** The parts that need no server: backoff and the close-code table. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, closePolicy } from "@herald/client";

test("full-jitter backoff: random below a ceiling that doubles up to the cap", () => {
  const top = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0.999999 });
  assert.deepEqual(
    Array.from({ length: 6 }, () => top.next()),
    [99, 199, 399, 799, 999, 999],
  );
  top.reset();
  assert.equal(top.next(), 99);
  const bottom = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0 });
  assert.equal(bottom.next(), 0);
});

test("close codes: which retry, which stop, which need a new token", () => {
  for (const code of [1000, 1001, 1006, 1009, 1011, 1012, 1013, 4008]) {
    assert.equal(closePolicy(code).action, "reconnect", String(code));
  }
  for (const code of [1002, 1007, 1008, 4003, 4029]) assert.equal(closePolicy(code).action, "stop", String(code));
  assert.equal(closePolicy(4001).action, "renew-token");
});

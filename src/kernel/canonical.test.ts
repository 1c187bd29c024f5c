import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { canonicalIpv4 } from "../common/ipv4.js";
import { canonicalAddress } from "./canonical.js";

describe("canonicalAddress", () => {
  it("agrees with canonicalIpv4", () => {
    const samples = [
      "10.0.0.1",
      "10.0.0.11",
      "0.0.0.0",
      "255.255.255.255",
      "256.0.0.1",
      "010.0.0.1",
      "10.0.0",
      "10.0.0.1.",
      " 10.0.0.1",
      "10.0.0.1\n",
      "1.2.3.04",
      "::1",
      "",
      "199.249.250.251",
    ];
    for (let i = 0; i < 2000; i++) {
      const octet = () => [String((i * 37) % 300), `0${i % 10}`, String(i % 256)][i % 3];
      samples.push([octet(), octet(), String(i % 260), octet()].join("."));
    }
    for (const text of samples) assert.equal(canonicalAddress(text), canonicalIpv4(text), text);
  });
});

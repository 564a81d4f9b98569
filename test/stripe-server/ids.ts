import { randomBytes } from "node:crypto";

/** Stripe-style object ids: a type prefix and 24 base-62 characters (`in_…`, `il_…`, `req_…`). */
export function newId(prefix: string): string {
  const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  let s = "";
  for (const b of randomBytes(24)) s += alphabet[b % alphabet.length];
  return `${prefix}_${s}`;
}

/** The server's clock: object timestamps, idempotency-key expiry and search lag use it. */
export class Clock {
  private offset = 0;
  constructor(private readonly base: () => number) {}
  now(): number {
    return this.base() + this.offset;
  }
  nowSec(): number {
    return Math.floor(this.now() / 1000);
  }
  /** Moves time forward, e.g. past the 24 h idempotency window. */
  advance(ms: number): void {
    this.offset += ms;
  }
}

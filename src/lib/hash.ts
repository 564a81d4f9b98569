/**
 * 32-bit FNV-1a over the UTF-16 code units of `s`. Stable forever: event ids are mapped to bus
 * partitions with it, and changing it would split one id's history across partitions.
 */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

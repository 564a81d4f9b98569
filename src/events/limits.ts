/**
 * Limits on one event. Documented in the README ("Limits"); changing one is a user-visible change.
 */
export const eventLimits = {
  /** Max length of `id`, in characters. */
  idMaxLength: 256,
  /** Max length of `customer`, in characters. */
  customerMaxLength: 256,
  /** Max length of `type`; it must also match {@link typePattern}. */
  typeMaxLength: 128,
  /** Max length of `source`, in characters. */
  sourceMaxLength: 256,
  /** Max properties per event, counted after nested objects are flattened to dotted keys. */
  maxProperties: 64,
  /** Max length of a (flattened) property key. */
  propertyKeyMaxLength: 128,
  /** Max length of one property value, as text. */
  propertyValueMaxLength: 4096,
  /** Max nesting depth of `properties`. */
  maxPropertyDepth: 8,
  /** Max total characters of all property keys and values of one event. */
  maxPropertyBytes: 32 * 1024,
  /** How far in the future an event time may be. */
  maxFutureMs: 5 * 60 * 1000,
  /** JSON numbers with more significant digits than this cannot be represented exactly. */
  maxNumberDigits: 15,
} as const;

/** Event types: letters, digits and `_ . : - /`, starting with a letter or digit. */
export const typePattern = /^[A-Za-z0-9][A-Za-z0-9_.:/-]*$/;

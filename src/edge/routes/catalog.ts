import type { Context, Hono } from "hono";
import { z } from "zod";
import {
  CatalogInputError,
  validateCatalogDocument,
  type CatalogDocument,
  type VersionedCollection,
} from "../../catalog/index.js";
import { ApiError } from "../../lib/errors.js";
import type { EdgeDeps } from "../app.js";
import { requireScope } from "../auth.js";
import { readBodyLimited } from "../body.js";
import type { EdgeEnv } from "../context.js";
import { decodeCursor, encodeCursor, parseWith } from "../params.js";

/** Most bytes of one customer, subscription or plan body. */
const maxObjectBytes = 256 * 1024;

const listQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    cursor: z.string().max(2000).optional(),
  })
  .strict();

/** A catalog input error as the API's 400, each issue naming its field. */
export function catalogError(err: CatalogInputError): ApiError {
  return new ApiError("invalid_request", err.message, {
    errors: err.issues.map((i) => ({ field: i.path, code: "invalid", message: i.message })),
  });
}

/** Cursor pagination over a collection's current objects, ordered by key. */
function page<T extends { key: string }>(c: Context<EdgeEnv>, items: readonly T[]) {
  const q = parseWith(listQuery, c.req.query());
  const after = q.cursor === undefined ? undefined : decodeCursor(z.string(), q.cursor);
  const start = after === undefined ? 0 : items.findIndex((x) => x.key > after);
  const data = start < 0 ? [] : items.slice(start, start + q.limit);
  const last = data.length === q.limit && start + q.limit < items.length ? data.at(-1) : undefined;
  return {
    data,
    next_cursor: last ? encodeCursor(last.key) : null,
  };
}

/**
 * Catalog objects one at a time (`/v1/customers`, `/v1/subscriptions`, `/v1/plans`): list with
 * cursor pagination, get (with `?version=` for an older one), versions, and PUT, which validates
 * the object and every reference exactly as `tally catalog apply` does.
 */
export function mountCatalogRoutes(app: Hono<EdgeEnv>, deps: EdgeDeps): void {
  const { catalog, keys } = deps;
  const kinds = [
    ["customers", "customer", catalog.customers],
    ["subscriptions", "subscription", catalog.subscriptions],
    ["plans", "plan", catalog.plans],
  ] as const;
  for (const [section, noun, collection] of kinds) {
    const coll = collection as VersionedCollection<{ key: string }>;
    app.get(`/v1/${section}`, requireScope(keys, "read"), (c) => c.json(page(c, coll.list())));
    app.get(`/v1/${section}/:key`, requireScope(keys, "read"), async (c) => {
      const key = c.req.param("key");
      const v = c.req.query("version");
      if (v !== undefined && !/^[1-9]\d{0,9}$/.test(v)) {
        throw new ApiError("invalid_request", "version: must be a positive integer", {
          errors: [{ field: "version", code: "invalid", message: "must be a positive integer" }],
        });
      }
      const found = v === undefined ? coll.get(key) : await coll.version(key, Number(v));
      if (found === undefined) throw new ApiError("not_found", `no ${noun} ${JSON.stringify(key)}`);
      return c.json(found);
    });
    app.get(`/v1/${section}/:key/versions`, requireScope(keys, "read"), async (c) => {
      const versions = await coll.history(c.req.param("key"));
      if (versions.length === 0)
        throw new ApiError("not_found", `no ${noun} ${JSON.stringify(c.req.param("key"))}`);
      return c.json({ data: versions });
    });
    app.put(`/v1/${section}/:key`, requireScope(keys, "admin"), async (c) => {
      const key = c.req.param("key");
      let body: unknown;
      try {
        body = JSON.parse(Buffer.from(await readBodyLimited(c, maxObjectBytes)).toString("utf8"));
      } catch (err: unknown) {
        if (err instanceof ApiError) throw err;
        throw new ApiError("invalid_request", "body is not valid JSON");
      }
      if (body === null || typeof body !== "object" || Array.isArray(body)) {
        throw new ApiError("invalid_request", `body must be a ${noun} object`);
      }
      const obj = body as Record<string, unknown>;
      if (obj.key !== undefined && obj.key !== key) {
        throw new ApiError("invalid_request", "key: must equal the key in the URL (or be left out)", {
          errors: [{ field: "key", code: "invalid", message: "must equal the key in the URL" }],
        });
      }
      let doc: CatalogDocument;
      try {
        doc = validateCatalogDocument({ [section]: [{ ...obj, key }] }, catalog.lookup());
      } catch (err: unknown) {
        if (err instanceof CatalogInputError) {
          // Paths name the object itself (`currency`), not its place in a document (`customers[0].currency`).
          const prefix = `${section}[0].`;
          throw catalogError(
            new CatalogInputError(
              err.issues.map((i) => ({
                ...i,
                path: i.path.startsWith(prefix) ? i.path.slice(prefix.length) : i.path,
              })),
            ),
          );
        }
        throw err;
      }
      const result = await catalog.applyDocument(doc);
      const [r] = result[section];
      return c.json({ ...r, [noun]: coll.get(key) }, r?.outcome === "created" ? 201 : 200);
    });
  }
}

// POST /uploads: a signed-in user uploads one file (multipart/form-data, field "file"). The file is
// streamed to DATA_DIR/uploads under a random name, at most FILE_UPLOAD_MAX_BYTES, then recorded in
// app_public.upload_files as that user (row-level security applies); if it cannot be recorded, the
// file is removed, so nothing is left half-written. Owners list their files through GraphQL.
import { randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import busboy from "busboy";
import type { Request, Response } from "express";
import type pg from "pg";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { sessionOf } from "./auth.ts";
import { isUnavailable, withTransactionClient } from "../db/pool.ts";
import { STANDARD_ERRORS, UNAVAILABLE, unexpected } from "./errors.ts";

class TooLarge extends Error {}
class Aborted extends Error {}
/** The request is not the multipart form it claims to be (no boundary, a malformed part). */
class BadForm extends Error {}

function fail(res: Response, status: number, code: string, message: string) {
  res.status(status).json({ errors: [{ message, extensions: { code } }] });
}

export function uploadHandler(pool: pg.Pool, config: Pick<Config, "uploads" | "roles" | "statementTimeoutMs">, log: Logger) {
  return async (req: Request, res: Response) => {
    const sessionId = sessionOf(req)?.session;
    if (!sessionId) return fail(res, 401, "UNAUTHENTICATED", "Sign in to upload.");
    if (!req.headers["content-type"]?.startsWith("multipart/form-data")) {
      return fail(res, 415, "UNSUPPORTED_MEDIA_TYPE", "Send multipart/form-data with one field named file.");
    }
    await fs.mkdir(config.uploads.dir, { recursive: true });
    const storageKey = randomUUID();
    const file = path.join(config.uploads.dir, storageKey);
    let stored: { name: string; type: string; size: number } | null = null;
    // Every write to disk, so that a failure waits for them before removing the file (the write
    // stream opens asynchronously and would otherwise create it after the removal).
    const writes: Promise<void>[] = [];
    let current: Readable | null = null;
    try {
      await new Promise<void>((resolve, reject) => {
        let bb: busboy.Busboy;
        try {
          // One byte over the limit is what busboy counts as too large: a file of exactly
          // FILE_UPLOAD_MAX_BYTES is accepted.
          bb = busboy({ headers: req.headers, limits: { files: 1, fileSize: config.uploads.maxBytes + 1, fields: 0 } });
        } catch (err) {
          return reject(new BadForm((err as Error).message));
        }
        // Stops reading the request: whatever the client still sends is not read (the answer
        // closes the connection), so a refusal does not wait for the rest of a large body.
        const stop = (err: Error) => {
          req.unpipe(bb);
          current?.destroy(err);
          reject(err);
        };
        bb.on("file", (field, stream, info) => {
          if (field !== "file" || stored) {
            stream.resume();
            return;
          }
          current = stream;
          let size = 0;
          stream.on("data", (chunk: Buffer) => (size += chunk.length));
          stream.on("limit", () => stop(new TooLarge()));
          const entry = { name: info.filename ?? "upload", type: info.mimeType, size: 0 };
          stored = entry;
          // A write that fails (disk full, no permission) fails the upload at once: busboy would
          // otherwise wait for ever on the destroyed stream.
          const write = pipeline(stream, createWriteStream(file, { flags: "wx" })).then(() => void (entry.size = size));
          write.catch((err: unknown) => stop(err instanceof Error ? err : new Error(String(err))));
          writes.push(write);
        });
        bb.on("error", (err: Error) => stop(new BadForm(err.message)));
        bb.on("close", () => Promise.all(writes).then(() => resolve(), reject));
        // A client that goes away mid-upload: busboy would wait for ever, and the partial file
        // would have no row for the cleanup to find. Fail the file stream; the catch removes it.
        req.on("close", () => {
          if (req.complete) return;
          const aborted = new Aborted("the upload was aborted");
          current?.destroy(aborted);
          reject(aborted);
        });
        req.pipe(bb);
      });
      const upload = stored as { name: string; type: string; size: number } | null;
      if (!upload) return fail(res, 400, "NO_FILE", "No field named file in the form.");
      const row = await withTransactionClient(pool, async (client) => {
        await client.query("begin");
        await client.query(
          "select set_config('role', $1, true), set_config('hourglass.session_id', $2, true), set_config('statement_timeout', $3, true)",
          [config.roles.visitor, sessionId, String(config.statementTimeoutMs)],
        );
        const { rows } = await client.query(
          `select id::text as "rowId", name, size::int, content_type as "contentType", expires_at as "expiresAt"
           from app_hidden.record_upload($1, $2, $3, $4, $5::interval)`,
          [storageKey, upload.name, upload.size, upload.type, `${config.uploads.ttlHours} hours`],
        );
        await client.query("commit");
        return rows[0];
      });
      log.info("file uploaded", { file: row.rowId, bytes: upload.size });
      res.status(201).json(row);
    } catch (err) {
      await Promise.allSettled(writes);
      await fs.rm(file, { force: true });
      if (err instanceof Aborted) return void log.info("upload aborted by the client; nothing kept");
      // The rest of the request body is left unread: the connection closes after this answer.
      if (!req.complete) res.set("connection", "close");
      if (err instanceof TooLarge) return fail(res, 413, "FILE_TOO_LARGE", `Files are limited to ${config.uploads.maxBytes} bytes.`);
      if (err instanceof BadForm) return fail(res, 400, "BAD_MULTIPART", `Not a valid multipart/form-data body: ${err.message}.`);
      // From recording it: the same answers as GraphQL's for the same causes.
      const code = (err as { code?: unknown }).code;
      // The session expired or was signed out while the file was arriving (record_upload's UPPRM).
      if (code === "UPPRM") return fail(res, 401, "UNAUTHENTICATED", "Sign in to upload.");
      if (code === "57014") return fail(res, 503, STANDARD_ERRORS["57014"]!.code, STANDARD_ERRORS["57014"]!.message);
      if (isUnavailable(err)) {
        log.warn("an upload could not reach the database; nothing kept", { err });
        return fail(res, 503, UNAVAILABLE.code, UNAVAILABLE.message);
      }
      res.status(500).json({ errors: [unexpected(log, "upload failed", err)] });
    }
  };
}

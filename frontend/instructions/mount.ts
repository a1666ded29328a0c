/**
 * RUN `--mount=` values: comma-separated `key=value` fields read with CSV quoting (a field may be
 * quoted to hold a comma), as BuildKit reads them. `parseMount` takes the value after variable
 * expansion; `checkMountBeforeExpansion` does the checks BuildKit makes when it first reads the
 * Dockerfile, before any ARG is known.
 */
import { cleanPath } from "../../oci/clean-path.js";
import { DockerfileError } from "../errors.js";
import type { Position } from "../syntax/ast.js";
import { withSuggestion } from "./suggest.js";
import type { MountSpec } from "./types.js";

export interface MountContext {
  file: string;
  lines?: readonly string[];
  /** Where the `--mount` flag is: `RunInstruction.mountPositions[i]`. */
  position: Position;
}

type MountType = MountSpec["type"];

const MOUNT_TYPES: readonly MountType[] = ["bind", "cache", "tmpfs", "secret", "ssh"];
const SHARING_MODES = ["shared", "private", "locked"] as const;
type Sharing = (typeof SHARING_MODES)[number];

const KEYS = [
  "type",
  "from",
  "source",
  "target",
  "readonly",
  "id",
  "sharing",
  "required",
  "size",
  "mode",
  "uid",
  "gid",
  "src",
  "dst",
  "destination",
  "ro",
  "rw",
  "readwrite",
  "env",
];

interface Field {
  /** Lower-cased, as BuildKit matches keys. */
  key: string;
  /** Undefined for a bare word such as `ro` or `required`. */
  value?: string;
  text: string;
}

/** The checks that need no variable values: CSV syntax, and no variable in `from`. */
export function checkMountBeforeExpansion(value: string, ctx: MountContext): void {
  const fail = failAt(ctx);
  for (const field of readFields(value, fail)) {
    // The stage a mount reads from must be known before ARGs are, to order the stages.
    if (field.key === "from" && field.value !== undefined && /\$./.test(field.value)) {
      throw fail("'from' doesn't support variable expansion, define alias stage instead");
    }
  }
}

export function parseMount(value: string, ctx: MountContext): MountSpec {
  const fail = failAt(ctx);
  const fields = readFields(value, fail);

  // BuildKit reads fields in order, so `required,type=secret` failed there because the type was
  // still `bind` when `required` came; taking the type first accepts the fields in any order.
  let type: MountType = "bind";
  for (const field of fields) {
    if (field.key !== "type" || field.value === undefined) continue;
    const wanted = field.value.toLowerCase() as MountType;
    if (!MOUNT_TYPES.includes(wanted)) {
      throw fail(
        withSuggestion(`unsupported mount type ${JSON.stringify(field.value)}`, wanted, MOUNT_TYPES),
      );
    }
    type = wanted;
  }

  const seen: {
    from?: string;
    source?: string;
    target?: string;
    id?: string;
    env?: string;
    readonly?: boolean;
    required: boolean;
    size?: number;
    sharing?: Sharing;
    mode?: number;
    uid?: number;
    gid?: number;
  } = { required: false };
  const secretOrSsh = type === "secret" || type === "ssh";
  const unexpectedForType = (key: string) => fail(`unexpected key '${key}' for mount type '${type}'`);

  for (const { key, value: fieldValue, text } of fields) {
    if (fieldValue === undefined) {
      if (key === "readonly" || key === "ro") seen.readonly = true;
      else if (key === "readwrite" || key === "rw") seen.readonly = false;
      else if (key === "required") {
        if (!secretOrSsh) throw unexpectedForType(key);
        seen.required = true;
      } else throw fail(`invalid field '${text}' must be a key=value pair`);
      continue;
    }
    switch (key) {
      case "type":
        break;
      case "from":
        seen.from = fieldValue;
        break;
      case "source":
      case "src":
        seen.source = fieldValue;
        break;
      case "target":
      case "dst":
      case "destination":
        seen.target = fieldValue;
        break;
      case "id":
        seen.id = fieldValue;
        break;
      case "env":
        seen.env = fieldValue;
        break;
      case "readonly":
      case "ro":
        seen.readonly = parseGoBool(fieldValue, key, fail);
        break;
      case "readwrite":
      case "rw":
        seen.readonly = !parseGoBool(fieldValue, key, fail);
        break;
      case "required":
        if (!secretOrSsh) throw unexpectedForType(key);
        seen.required = parseGoBool(fieldValue, key, fail);
        break;
      case "size": {
        if (type !== "tmpfs") throw unexpectedForType(key);
        const size = parseRamSize(fieldValue);
        if (size === undefined)
          throw fail(`invalid value for size: ${fieldValue} (write a size such as 64m or 1g)`);
        seen.size = size;
        break;
      }
      case "sharing": {
        const sharing = fieldValue.toLowerCase() as Sharing;
        if (!SHARING_MODES.includes(sharing)) {
          throw fail(
            withSuggestion(`unsupported sharing value ${JSON.stringify(fieldValue)}`, sharing, SHARING_MODES),
          );
        }
        seen.sharing = sharing;
        break;
      }
      case "mode":
        seen.mode = parseUint32(fieldValue, 8, () =>
          fail(`invalid value ${fieldValue} for mode (write octal permissions such as 0755)`),
        );
        break;
      case "uid":
      case "gid":
        seen[key] = parseUint32(fieldValue, 10, () => fail(`invalid value ${fieldValue} for ${key}`));
        break;
      default:
        throw fail(withSuggestion(`unexpected key '${key}' in '${text}'`, key, KEYS));
    }
  }

  if (type === "bind" || type === "tmpfs") {
    for (const key of ["mode", "uid", "gid"] as const) {
      if (seen[key] !== undefined) throw fail(`${key} not allowed for "${type}" type mounts`);
    }
  }
  if (type === "secret") {
    if (seen.from) throw fail("secret mount should not have a from");
    if (seen.sharing !== undefined) throw fail("secret mount should not define sharing");
    if (!seen.source && !seen.target && !seen.id) {
      throw fail("invalid secret mount. one of source, target required (or give it an id)");
    }
    if (seen.source && seen.id) throw fail("both source and id can't be set");
  }
  if (seen.sharing !== undefined && type !== "cache")
    throw fail(`invalid cache sharing set for ${type} mount`);
  if (type === "ssh" && seen.source) throw fail("ssh does not support source");
  if (seen.env === "") throw fail("invalid value for env: name the environment variable (env=TOKEN)");

  const fileInfo = { uid: seen.uid, gid: seen.gid, mode: seen.mode };
  switch (type) {
    case "bind":
      return dropUndefined({
        type,
        target: requireTarget(type, seen.target, fail),
        source: seen.source || undefined,
        from: seen.from || undefined,
        readwrite: seen.readonly === false,
      });
    case "cache": {
      const target = requireTarget(type, seen.target, fail);
      return dropUndefined({
        type,
        target,
        // BuildKit names a cache after its target when no id is given.
        id: seen.id || cleanPath(target),
        source: seen.source || undefined,
        from: seen.from || undefined,
        sharing: seen.sharing ?? "shared",
        readonly: seen.readonly === true,
        ...fileInfo,
      });
    }
    case "tmpfs":
      return dropUndefined({ type, target: requireTarget(type, seen.target, fail), size: seen.size });
    case "secret": {
      const id = seen.source || seen.id || baseName(seen.target ?? "");
      // A secret given as an environment variable is a file only when a target is asked for.
      const target = seen.target || (seen.env === undefined ? `/run/secrets/${baseName(id)}` : undefined);
      return dropUndefined({ type, id, target, env: seen.env, required: seen.required, ...fileInfo });
    }
    case "ssh":
      return dropUndefined({
        type,
        id: seen.id || "default",
        target: seen.target || undefined,
        required: seen.required,
        ...fileInfo,
      });
  }
}

function requireTarget(type: MountType, target: string | undefined, fail: Fail): string {
  if (!target) throw fail(`${type} mount needs a target: add target=<path in the container>`);
  // A relative target is joined to the working directory later, so only an absolute one can be `/` here.
  if (target.startsWith("/") && cleanPath(target) === "/") {
    throw fail(`invalid mount target ${JSON.stringify(target)}`);
  }
  return target;
}

type Fail = (reason: string) => DockerfileError;

function failAt(ctx: MountContext): Fail {
  return (reason) =>
    new DockerfileError(reason, {
      file: ctx.file,
      position: ctx.position,
      ...(ctx.lines === undefined ? {} : { lines: ctx.lines }),
    });
}

function readFields(value: string, fail: Fail): Field[] {
  let record: string[];
  try {
    record = readCsvRecord(value);
  } catch (error) {
    if (error instanceof CsvSyntaxError) throw fail(`failed to parse --mount as CSV: ${error.message}`);
    throw error;
  }
  return record.map((text) => {
    const equals = text.indexOf("=");
    if (equals < 0) return { key: text.toLowerCase(), text };
    return { key: text.slice(0, equals).toLowerCase(), value: text.slice(equals + 1), text };
  });
}

class CsvSyntaxError extends Error {}

/**
 * One record of Go's `encoding/csv` with its defaults: a field that starts with `"` is quoted
 * (`""` inside stands for one quote) and must end at a comma or the end; a quote anywhere else
 * is an error; the record ends at the first newline outside quotes.
 */
export function readCsvRecord(text: string): string[] {
  if (text === "") throw new CsvSyntaxError("the value is empty (write e.g. type=cache,target=/root/.cache)");
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = "";
    if (text[i] === '"') {
      const opening = i;
      i++;
      for (;;) {
        const quote = text.indexOf('"', i);
        if (quote < 0) {
          throw new CsvSyntaxError(`extraneous or missing " in quoted-field (column ${opening + 1})`);
        }
        field += text.slice(i, quote).replace(/\r\n/g, "\n");
        i = quote + 1;
        if (text[i] === '"') {
          field += '"';
          i++;
          continue;
        }
        if (i < text.length && text[i] !== "," && text[i] !== "\n" && text[i] !== "\r") {
          throw new CsvSyntaxError(`extraneous or missing " in quoted-field (column ${i + 1})`);
        }
        break;
      }
    } else {
      const end = nextDelimiter(text, i);
      field = text.slice(i, end);
      const quote = field.indexOf('"');
      if (quote >= 0) throw new CsvSyntaxError(`bare " in non-quoted-field (column ${i + quote + 1})`);
      i = end;
    }
    fields.push(field);
    if (text[i] !== ",") return fields;
    i++;
  }
}

function nextDelimiter(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    const c = text[i];
    if (c === "," || c === "\n") return i;
    if (c === "\r" && text[i + 1] === "\n") return i;
  }
  return text.length;
}

/** Go's `strconv.ParseBool`. */
function parseGoBool(value: string, key: string, fail: Fail): boolean {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(value)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(value)) return false;
  throw fail(`invalid value for ${key}: ${value}`);
}

function parseUint32(value: string, radix: 8 | 10, fail: () => DockerfileError): number {
  const digits = radix === 8 ? /^[0-7]+$/ : /^\d+$/;
  if (!digits.test(value)) throw fail();
  const number = Number.parseInt(value, radix);
  if (number > 0xffff_ffff) throw fail();
  return number;
}

const BINARY_MULTIPLIERS: Readonly<Record<string, number>> = {
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  p: 1024 ** 5,
};

/** docker/go-units `RAMInBytes`: `64m`, `1.5g`, `512MiB`, `1024` (bytes); binary multiples. */
function parseRamSize(text: string): number | undefined {
  const match = /^(\d+(?:\.\d*)?|\.\d+) ?([a-z]*)$/i.exec(text);
  if (!match) return undefined;
  const size = Number(match[1]);
  const suffix = match[2]!.toLowerCase();
  if (suffix === "" || suffix === "b") return Math.trunc(size);
  const multiplier = BINARY_MULTIPLIERS[suffix[0]!];
  if (multiplier === undefined) return undefined;
  const rest = suffix.slice(1);
  if (rest !== "" && rest !== "b" && rest !== "ib") return undefined;
  return Math.trunc(size * multiplier);
}

/** Go's `path.Base`. */
function baseName(path: string): string {
  if (path === "") return ".";
  const trimmed = path.replace(/\/+$/, "");
  if (trimmed === "") return "/";
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/** Leaves optional fields out instead of present-but-undefined, so results compare and print cleanly. */
function dropUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

// Offline validation of Kubernetes manifests, for CI (no cluster, no network once installed).
//
//   node validate.mjs FILE.yaml...      exit 0 when every object of every file is valid
//
// Every YAML document must be a Kubernetes object that kubernetes-models knows (apiVersion +
// kind), and pass two checks:
//   1. schema: kubernetes-models' validator (the OpenAPI schema of the Kubernetes API: required
//      fields, types, formats, enums);
//   2. unknown fields: the schema does not reject fields it does not know (the API server would
//      drop them silently, or refuse them with --validate=strict), so every object is also
//      type-checked as a TypeScript literal of the same models' interface: TypeScript's
//      excess-property check names each unknown field, and any wrong type;
//   3. pull policy: a container whose image is untagged or `:latest` must say imagePullPolicy
//      (the default for those is Always, which breaks images loaded into kind/minikube).
// Errors name the file, the line and the field path.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { LineCounter, parseAllDocuments } from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const ts = require("typescript");

// "apps/v1" + "Deployment" -> "kubernetes-models/apps/v1/Deployment"; core "v1" -> ".../v1/Pod".
function modelModule(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" ||
      !/^[a-z0-9.]*\/?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Za-z]+$/.test(kind)) {
    return null;
  }
  const name = `kubernetes-models/${apiVersion}/${kind}`;
  try {
    require.resolve(name);
    return name;
  } catch {
    return null;
  }
}

// Emits `value` as a pretty-printed TypeScript literal and records, per emitted line, the
// field path it came from (so that a TypeScript diagnostic maps back to a YAML line).
function emitLiteral(value, pathSoFar, out, indent) {
  const pad = "  ".repeat(indent);
  if (Array.isArray(value)) {
    out.push({ text: "[", path: pathSoFar });
    value.forEach((v, i) => {
      const p = [...pathSoFar, i];
      const start = out.length;
      emitLiteral(v, p, out, indent + 1);
      out[start].text = pad + "  " + out[start].text;
      out[out.length - 1].text += ",";
    });
    out.push({ text: pad + "]", path: pathSoFar });
  } else if (value !== null && typeof value === "object") {
    out.push({ text: "{", path: pathSoFar });
    for (const [k, v] of Object.entries(value)) {
      const p = [...pathSoFar, k];
      const start = out.length;
      emitLiteral(v, p, out, indent + 1);
      out[start].text = pad + "  " + JSON.stringify(k) + ": " + out[start].text;
      out[start].path = p;
      out[out.length - 1].text += ",";
    }
    out.push({ text: pad + "}", path: pathSoFar });
  } else {
    out.push({ text: JSON.stringify(value), path: pathSoFar });
  }
}

function lineOf(doc, lineCounter, fieldPath) {
  // The deepest node of the path that exists in the document.
  for (let n = fieldPath.length; n >= 0; n--) {
    const node = doc.getIn(fieldPath.slice(0, n), true);
    if (node && node.range) return lineCounter.linePos(node.range[0]).line;
  }
  return 1;
}

function fieldName(fieldPath) {
  return fieldPath.map((p) => (typeof p === "number" ? `[${p}]` : `.${p}`)).join("") || ".";
}

// Every container of every pod spec in `value` (Pod, Deployment, Job, CronJob...).
function containersOf(value, at) {
  if (value === null || typeof value !== "object") return [];
  const found = [];
  for (const [k, v] of Object.entries(value)) {
    if (["containers", "initContainers", "ephemeralContainers"].includes(k) && Array.isArray(v)) {
      v.forEach((c, i) => {
        if (c && typeof c === "object") found.push({ container: c, at: [...at, k, i] });
      });
    } else if (v && typeof v === "object") {
      found.push(...containersOf(v, [...at, Array.isArray(value) ? Number(k) : k]));
    }
  }
  return found;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate.mjs FILE.yaml...");
  process.exit(2);
}

const problems = [];
const checked = [];  // {file, doc, lineCounter, module, kind, object, index}
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, uniqueKeys: true });
  docs.forEach((doc, index) => {
    for (const e of doc.errors) {
      problems.push(`${file}:${e.linePos?.[0]?.line ?? 1}: YAML: ${e.message.split("\n")[0]}`);
    }
    if (doc.errors.length > 0) return;
    const object = doc.toJS();
    if (object === null || object === undefined) return;  // an empty document (comments only)
    const where = (p) => `${file}:${lineOf(doc, lineCounter, p)}`;
    if (typeof object !== "object" || Array.isArray(object)) {
      problems.push(`${where([])}: document ${index + 1} is not a Kubernetes object`);
      return;
    }
    const module = modelModule(object.apiVersion, object.kind);
    if (module === null) {
      problems.push(`${where(["kind"])}: unknown apiVersion/kind ${object.apiVersion}/${object.kind}`);
      return;
    }
    const Model = require(module)[object.kind];
    try {
      new Model(object).validate();
    } catch (err) {
      for (const detail of err.errors ?? [{ instancePath: "", message: err.message }]) {
        const p = (detail.instancePath || "").split("/").filter(Boolean)
          .map((s) => (/^[0-9]+$/.test(s) ? Number(s) : s));
        const extra = detail.params ? ` ${JSON.stringify(detail.params)}` : "";
        problems.push(`${where(p)}: ${object.kind} ${fieldName(p)}: ${detail.message}${extra}`);
      }
    }
    for (const { container, at } of containersOf(object, [])) {
      const image = typeof container.image === "string" ? container.image : "";
      const tag = image.includes("@") ? "digest" : (image.split("/").pop().split(":")[1] ?? "");
      if ((tag === "" || tag === "latest") && container.imagePullPolicy === undefined) {
        problems.push(`${where([...at, "image"])}: ${object.kind} ${fieldName(at)}: image ` +
                      `"${image}" without imagePullPolicy is always pulled; say IfNotPresent, ` +
                      "Always or Never");
      }
    }
    checked.push({ file, doc, lineCounter, module, kind: object.kind, object, index });
  });
}

// Unknown fields and types: one TypeScript program over every object. TypeScript reports one
// unknown field per object literal, so each one is removed and the check repeated (bounded).
function typeCheck() {
  const lines = [];  // {text, path, item}
  checked.forEach((c, i) => {
    lines.push({ text: `import type { I${c.kind} as T${i} } from "${c.module}";`, path: null });
  });
  checked.forEach((c, i) => {
    const out = [];
    emitLiteral(c.object, [], out, 0);
    out[0].text = `export const object${i}: T${i} = ` + out[0].text;
    out[out.length - 1].text += ";";
    for (const l of out) lines.push({ ...l, item: c });
  });
  const checkFile = path.join(here, `.check-${process.pid}.ts`);
  fs.writeFileSync(checkFile, lines.map((l) => l.text).join("\n") + "\n");
  const found = [];  // {problem, item, path}
  try {
    const program = ts.createProgram([checkFile], {
      strict: true, noEmit: true, skipLibCheck: true, types: [],
      module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16,
      target: ts.ScriptTarget.ES2022,
    });
    for (const d of ts.getPreEmitDiagnostics(program)) {
      const message = ts.flattenDiagnosticMessageText(d.messageText, " ");
      const l = d.file && path.resolve(d.file.fileName) === path.resolve(checkFile)
        ? lines[d.file.getLineAndCharacterOfPosition(d.start).line] : null;
      if (!l || !l.item) {
        found.push({ problem: `validator: ${message}`, item: null, path: [] });
        continue;
      }
      const c = l.item;
      const short = message.replace(/\s+/g, " ").slice(0, 300);
      found.push({
        problem: `${c.file}:${lineOf(c.doc, c.lineCounter, l.path)}: ${c.kind} ` +
                 `${fieldName(l.path)}: ${short}`,
        item: c, path: l.path, excess: d.code === 2353 || d.code === 2561,
      });
    }
  } finally {
    fs.rmSync(checkFile, { force: true });
  }
  return found;
}

for (let round = 0; round < 50 && checked.length > 0; round++) {
  const found = typeCheck();
  let removed = 0;
  for (const f of found) {
    if (!problems.includes(f.problem)) problems.push(f.problem);
    if (!f.excess || f.path.length === 0) continue;
    const parent = f.path.slice(0, -1).reduce((o, k) => (o == null ? o : o[k]), f.item.object);
    if (parent != null && typeof parent === "object") {
      delete parent[f.path[f.path.length - 1]];
      removed++;
    }
  }
  if (removed === 0) break;
}

for (const p of problems) console.log(p);
console.log(`validate: ${checked.length} object(s) in ${files.length} file(s), ` +
            `${problems.length} problem(s)`);
process.exit(problems.length === 0 ? 0 : 1);

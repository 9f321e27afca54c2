// A submit form generated from a job type's input JSON Schema (GET /api/v1/task-types), with
// client-side checks that mirror the server's (required, min/max, integer, multipleOf, lengths,
// enums) and the server's 400 `fields` shown next to the field they name.

import { h, fmtBytes } from "./dom.js";

function deref(schema, root) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    const { $ref, ...rest } = schema;
    return { ...((root.$defs || root.definitions || {})[name] || {}), ...rest };
  }
  return schema || {};
}

/** The schema without `anyOf: [X, null]` wrapping, and whether null is allowed. */
export function unwrap(schema, root) {
  schema = deref(schema, root);
  if (!schema.anyOf) return { schema, nullable: false };
  const options = schema.anyOf.map((s) => deref(s, root));
  const nonNull = options.filter((s) => s.type !== "null");
  const nullable = nonNull.length < options.length;
  if (nonNull.length === 1) {
    const { anyOf, ...outer } = schema;
    return { schema: { ...nonNull[0], ...outer }, nullable };
  }
  return { schema, nullable };
}

function kindOf(schema, isFile) {
  if (isFile) return "file";
  if (Array.isArray(schema.enum)) return "enum";
  if (schema.type === "boolean") return "boolean";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "string") return "string";
  return "json";
}

function label(path, schema) {
  return schema.title || path.split(".").pop().replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

function bounds(schema) {
  const parts = [];
  if (schema.minimum !== undefined && schema.maximum !== undefined) parts.push(`${schema.minimum} to ${schema.maximum}`);
  else if (schema.minimum !== undefined) parts.push(`at least ${schema.minimum}`);
  else if (schema.maximum !== undefined) parts.push(`at most ${schema.maximum}`);
  if (schema.multipleOf !== undefined) parts.push(`a multiple of ${schema.multipleOf}`);
  if (schema.maxLength !== undefined) parts.push(`up to ${schema.maxLength} characters`);
  return parts.length ? ` (${parts.join(", ")})` : "";
}

/** One field's problem, as the server would word it, or "" when fine. */
export function check(field) {
  const { kind, schema, required, input } = field;
  if (kind === "file") {
    const file = input.files && input.files[0];
    if (!file) return required ? "is required" : "";
    if (field.maxBytes && file.size > field.maxBytes) return `is larger than the limit of ${fmtBytes(field.maxBytes)}`;
    const accept = schema.contentMediaType || "";
    if (accept.startsWith("image/") && file.type && !file.type.startsWith("image/")) return "must be an image (PNG, JPEG or WebP)";
    return "";
  }
  if (kind === "boolean") return "";
  const raw = input.value.trim();
  if (kind === "number") {
    if (input.validity && input.validity.badInput) return "must be a number";
    if (raw === "") return required ? "is required" : "";
    const n = Number(raw);
    if (!Number.isFinite(n)) return "must be a number";
    if (schema.type === "integer" && !Number.isInteger(n)) return "must be a whole number";
    if (schema.minimum !== undefined && n < schema.minimum) return `must be at least ${schema.minimum}`;
    if (schema.maximum !== undefined && n > schema.maximum) return `must be at most ${schema.maximum}`;
    if (schema.exclusiveMinimum !== undefined && n <= schema.exclusiveMinimum) return `must be greater than ${schema.exclusiveMinimum}`;
    if (schema.exclusiveMaximum !== undefined && n >= schema.exclusiveMaximum) return `must be less than ${schema.exclusiveMaximum}`;
    if (schema.multipleOf !== undefined) {
      const q = n / schema.multipleOf;
      if (Math.abs(q - Math.round(q)) > 1e-9) return `must be a multiple of ${schema.multipleOf}`;
    }
    return "";
  }
  if (raw === "") return required ? "is required" : "";
  if (kind === "enum") return schema.enum.map(String).includes(raw) ? "" : `must be one of ${schema.enum.join(", ")}`;
  if (kind === "string") {
    if (schema.minLength !== undefined && raw.length < schema.minLength) return `must have at least ${schema.minLength} characters`;
    if (schema.maxLength !== undefined && raw.length > schema.maxLength) return `must have at most ${schema.maxLength} characters`;
    if (schema.pattern && !new RegExp(schema.pattern).test(raw)) return "is not in the expected format";
    return "";
  }
  try {
    const value = JSON.parse(raw);
    if (schema.type === "array" && !Array.isArray(value)) return "must be a JSON list";
  } catch {
    return "must be valid JSON";
  }
  return "";
}

function value(field) {
  const { kind, schema, input } = field;
  if (kind === "boolean") return input.checked;
  const raw = input.value.trim();
  if (raw === "") return undefined;
  if (kind === "number") return Number(raw);
  if (kind === "enum") {
    const match = schema.enum.find((e) => String(e) === raw);
    return match === undefined ? raw : match;
  }
  if (kind === "json") return JSON.parse(raw);
  return raw;
}

function widget(field, id) {
  const { kind, schema, nullable, required } = field;
  const dflt = schema.default;
  if (kind === "file") {
    return h("input", { type: "file", id, name: field.path, accept: schema.contentMediaType || "" });
  }
  if (kind === "enum") {
    const select = h("select", { id, name: field.path });
    if (nullable || !required || dflt === undefined) select.append(h("option", { value: "" }, nullable ? "— none —" : "— choose —"));
    for (const option of schema.enum) select.append(h("option", { value: String(option) }, String(option)));
    select.value = dflt === undefined || dflt === null ? "" : String(dflt);
    return select;
  }
  if (kind === "boolean") return h("input", { type: "checkbox", id, name: field.path, checked: dflt === true });
  if (kind === "number") {
    const step = schema.multipleOf ?? (schema.type === "integer" ? 1 : "any");
    return h("input", {
      type: "number", id, name: field.path, inputmode: schema.type === "integer" ? "numeric" : "decimal",
      min: schema.minimum, max: schema.maximum, step, value: dflt === undefined || dflt === null ? "" : String(dflt),
    });
  }
  if (kind === "string") {
    const long = (schema.maxLength || 0) > 200 || field.path === "prompt";
    const attrs = { id, name: field.path, maxlength: schema.maxLength, value: dflt ?? "" };
    return long ? h("textarea", { ...attrs, rows: 3 }) : h("input", { type: "text", ...attrs });
  }
  return h("textarea", {
    id, name: field.path, rows: 2, class: "mono",
    placeholder: schema.type === "array" ? "JSON, e.g. [[10, 10, 50, 50]]" : "JSON",
    value: dflt === undefined || dflt === null ? "" : JSON.stringify(dflt),
  });
}

function fieldBlock(field) {
  const id = `f-${field.path.replace(/[^a-zA-Z0-9_-]/g, "-")}`;
  field.input = widget(field, id);
  field.error = h("div", { class: "field-error", id: `err-${id.slice(2)}`, role: "alert" });
  const help = (field.schema.description || "") + bounds(field.schema);
  const parts = [];
  if (field.kind === "boolean") {
    parts.push(h("label", { class: "check" }, field.input, " ", label(field.path, field.schema)));
  } else {
    parts.push(h("label", { for: id }, label(field.path, field.schema), field.required ? h("span", { class: "req", title: "required" }, " *") : ""));
    parts.push(field.input);
  }
  if (field.kind === "file") {
    field.preview = h("img", { class: "preview", alt: "", hidden: true });
    field.fileInfo = h("span", { class: "muted small" });
    parts.push(h("div", { class: "preview-box" }, field.preview, field.fileInfo));
    field.input.addEventListener("change", () => {
      const file = field.input.files[0];
      if (field.previewUrl) URL.revokeObjectURL(field.previewUrl);
      field.previewUrl = null;
      field.preview.hidden = true;
      field.fileInfo.textContent = file ? `${file.name}, ${fmtBytes(file.size)}` : "";
      if (file && file.type.startsWith("image/")) {
        field.previewUrl = URL.createObjectURL(file);
        field.preview.src = field.previewUrl;
        field.preview.hidden = false;
      }
    });
  }
  if (help) parts.push(h("small", { class: "help" }, help));
  parts.push(field.error);
  field.input.setAttribute("aria-describedby", field.error.id);
  field.block = h("div", { class: `field kind-${field.kind}`, dataset: { field: field.path } }, parts);
  const recheck = () => { if (field.touched) show(field, check(field)); };
  field.input.addEventListener("input", recheck);
  field.input.addEventListener("change", () => { field.touched = true; recheck(); });
  field.input.addEventListener("blur", () => { field.touched = true; recheck(); });
  return field.block;
}

function show(field, message) {
  field.error.textContent = message ? `${label(field.path, field.schema)} ${message}` : "";
  field.block.classList.toggle("invalid", Boolean(message));
  if (message) field.input.setAttribute("aria-invalid", "true");
  else field.input.removeAttribute("aria-invalid");
}

/** Builds the form for one catalog entry; returns {element, validate, formData, showServerError, clearErrors}. */
export function buildForm(type) {
  const root = type.input_schema || {};
  const files = new Set(type.file_inputs || []);
  const maxBytes = type.limits && type.limits.max_upload_bytes;
  const fields = [];
  const sections = [];
  const topRequired = new Set(root.required || []);
  const main = [];

  for (const [name, raw] of Object.entries(root.properties || {})) {
    const { schema, nullable } = unwrap(raw, root);
    if (!files.has(name) && schema.type === "object" && schema.properties) {
      const required = new Set(schema.required || []);
      const group = [];
      for (const [sub, subRaw] of Object.entries(schema.properties)) {
        const u = unwrap(subRaw, root);
        const field = { path: `${name}.${sub}`, schema: u.schema, nullable: u.nullable, required: required.has(sub),
                        kind: kindOf(u.schema, false) };
        fields.push(field);
        group.push(fieldBlock(field));
      }
      if (group.length) {
        sections.push(h("fieldset", { class: "params" }, h("legend", {}, schema.title ? "Parameters" : name), h("div", { class: "grid" }, group)));
      }
      continue;
    }
    const field = { path: name, schema, nullable, required: topRequired.has(name), kind: kindOf(schema, files.has(name)), maxBytes };
    fields.push(field);
    main.push(fieldBlock(field));
  }

  const banner = h("div", { class: "form-error", role: "alert", hidden: true });
  const element = h("div", { class: "generated" }, main.length ? h("div", { class: "grid files" }, main) : "", sections, banner);

  function clearErrors() {
    for (const f of fields) show(f, "");
    banner.hidden = true;
    banner.replaceChildren();
  }

  function validate() {
    let firstBad = null;
    for (const f of fields) {
      f.touched = true;
      const message = check(f);
      show(f, message);
      if (message && !firstBad) firstBad = f;
    }
    if (firstBad) firstBad.input.focus();
    return !firstBad;
  }

  function formData() {
    const data = new FormData();
    data.append("task_type", type.name);
    const parameters = {};
    const inputs = {};
    for (const f of fields) {
      if (f.kind === "file") {
        const file = f.input.files[0];
        if (file) {
          data.append(f.path, file, file.name);
          if (f.previewUrl) inputs[f.path] = f.previewUrl;
        }
        continue;
      }
      const v = value(f);
      if (v === undefined) continue;
      const [head, ...rest] = f.path.split(".");
      if (rest.length) parameters[rest.join(".")] = v;
      else data.append(head, typeof v === "string" ? v : JSON.stringify(v));
    }
    if (Object.keys(parameters).length) data.append("parameters", JSON.stringify(parameters));
    return { data, inputs };
  }

  /** The server's 400: each `fields` entry next to its field; the sentence at the form's foot. */
  function showServerError(err) {
    clearErrors();
    const unplaced = [];
    for (const { field: path, message } of err.fields || []) {
      let f = fields.find((x) => x.path === path);
      if (!f) f = fields.find((x) => path.startsWith(`${x.path}.`) || path.startsWith(`${x.path}[`));
      if (f) {
        f.error.textContent = `${message}`;
        f.block.classList.add("invalid");
        f.input.setAttribute("aria-invalid", "true");
      } else {
        unplaced.push(`${path}: ${message}`);
      }
    }
    banner.hidden = false;
    banner.append(h("strong", {}, `The server refused the job (${err.status}): `), err.message);
    if (unplaced.length) banner.append(h("ul", {}, unplaced.map((u) => h("li", {}, u))));
    const first = fields.find((f) => f.block.classList.contains("invalid"));
    if (first) first.block.scrollIntoView({ block: "center" });
  }

  return { element, fields, validate, formData, showServerError, clearErrors };
}

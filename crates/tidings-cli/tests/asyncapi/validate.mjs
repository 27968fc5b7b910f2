// Validates an AsyncAPI document with the official parser (@asyncapi/parser).
//   node validate.mjs <file>
// Prints every diagnostic as `severity path: message`; exit status 1 when one is an
// error (or the document cannot be parsed), 0 otherwise. Used by tests/asyncapi.rs.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const file = process.argv[2];
if (!file) {
  console.error("usage: node validate.mjs <asyncapi document>");
  process.exit(2);
}
const severities = ["error", "warning", "info", "hint"];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"));
for (const d of diagnostics) {
  console.log(`${severities[d.severity] ?? d.severity} ${d.path.join(".")}: ${d.message} (${d.code})`);
}
const errors = diagnostics.filter((d) => d.severity === 0).length;
if (!document || errors > 0) {
  console.log(`invalid: ${errors} errors`);
  process.exit(1);
}
console.log(`valid AsyncAPI ${document.version()}: ${document.channels().length} channels, ${document.operations().length} operations, ${document.components().messages().length} messages`);

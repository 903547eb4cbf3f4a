// Khronos glTF validator on one GLB: prints its report as JSON (issues summary and messages).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const validator = require("gltf-validator");
const path = process.argv[2];
const report = await validator.validateBytes(new Uint8Array(readFileSync(path)), {
  uri: path, maxIssues: 100, format: "glb",
});
console.log(JSON.stringify({ issues: report.issues, info: report.info }));

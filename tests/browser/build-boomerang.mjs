// Build a release-like boomerang bundle from the npm sources (boomerangjs ships no bundle).
//
// Does what the upstream Gruntfile's release build does, minus minification:
//   * joins boomerang.js, the flavor's plugins (plugins.json) and plugins/zzz-last-plugin.js;
//   * replaces %boomerang_version% with the package version;
//   * removes the per-plugin `BOOMR = window.BOOMR || {};` and
//     `BOOMR.plugins = BOOMR.plugins || {};` lines;
//   * strips /* BEGIN_DEBUG */ ... /* END_DEBUG */ blocks and one-line
//     BOOMR.debug/info/warn/error calls (otherwise the console is full of debug output).
//
// Usage: node build-boomerang.mjs [OUTPUT] [FLAVOR]
//   OUTPUT defaults to node_modules/.build/boomerang.js (git-ignored), FLAVOR to "default".
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "node_modules", "boomerangjs");
const output = process.argv[2] || join(here, "node_modules", ".build", "boomerang.js");
const flavorName = process.argv[3] || "default";

const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const plugins = JSON.parse(readFileSync(join(root, "plugins.json"), "utf8"));
const flavor = plugins.flavors[flavorName];
if (!flavor) {
  console.error(`unknown flavor ${flavorName}; known: ${Object.keys(plugins.flavors).join(", ")}`);
  process.exit(2);
}

const files = ["boomerang.js", ...flavor.plugins, "plugins/zzz-last-plugin.js"];
let source = files.map((file) => readFileSync(join(root, file), "utf8")).join("\n;\n");

source = source
  .replaceAll("%boomerang_version%", pkg.version)
  .replace(/BOOMR\s*=\s*window\.BOOMR\s*\|\|\s*{};/g, "")
  .replace(/BOOMR\.plugins\s*=\s*BOOMR\.plugins\s*\|\|\s*{};/g, "")
  .replace(/[\t ]*\/\* ?BEGIN_DEBUG ?\*\/[\s\S]*?\/\* ?END_DEBUG ?\*\/[\t ]*\n?/g, "")
  .replace(/BOOMR\.(?:debug|info|warn|error)\(.*\);/g, "");

mkdirSync(dirname(output), { recursive: true });
writeFileSync(output, source);
console.log(`${output}: boomerang ${pkg.version}, flavor ${flavorName}, ` +
  `${flavor.plugins.length} plugins, ${source.length} bytes`);

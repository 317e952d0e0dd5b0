// Validates custom resources (KEDA, Prometheus Operator) against the published schemas of the npm
// packages @kubernetes-models/keda and @kubernetes-models/prometheus-operator (generated from the
// projects' Go API types), installed by tests/helm/conftest.py into tests/helm/.cache/.
//
//   node crd_validate.mjs <node_modules dir>  < objects.json  > results.json
//
// stdin: a JSON array of objects. stdout: a JSON array, one entry per object:
//   {kind, name, errors: [...], unknown: [...]}
// `errors` are schema violations (types, required fields, enums). The generated schemas do not set
// additionalProperties: false, so on their own they accept misspelled fields; `unknown` lists the
// fields the validator never looked at, which is what `kubectl apply --validate=strict` would reject
// (the API server's structural schema knows only the declared properties). The validator is given
// a Proxy that records every property it reads and every object whose keys it enumerates (maps).
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

const SCHEMAS = {
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda", "ComGithubKedacoreKedaV2ApisKedaV1alpha1ScaledObject"],
  "keda.sh/v1alpha1/TriggerAuthentication": ["@kubernetes-models/keda", "ComGithubKedacoreKedaV2ApisKedaV1alpha1TriggerAuthentication"],
  "monitoring.coreos.com/v1/ServiceMonitor": ["@kubernetes-models/prometheus-operator", "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1ServiceMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": ["@kubernetes-models/prometheus-operator", "ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1PrometheusRule"],
};

const nodeModules = process.argv[2];
if (!nodeModules) {
  console.error("usage: node crd_validate.mjs <node_modules dir> < objects.json");
  process.exit(2);
}

async function loadValidator(pkg, schema) {
  // The packages' `exports` do not expose _schemas/; import the file itself.
  const file = path.join(nodeModules, pkg, "_schemas", `${schema}.js`);
  const mod = await import(pathToFileURL(file).href);
  return mod.validate;
}

// Wraps `value` so that reads and key enumerations are recorded in `seen` (a Set of JSON pointers).
function track(value, pointer, seen) {
  if (value === null || typeof value !== "object") return value;
  return new Proxy(value, {
    get(target, key, receiver) {
      const child = Reflect.get(target, key, receiver);
      if (typeof key !== "string") return child;
      const childPointer = `${pointer}/${key}`;
      if (Object.prototype.hasOwnProperty.call(target, key)) seen.add(childPointer);
      return track(child, childPointer, seen);
    },
    ownKeys(target) {
      // A schema that enumerates the keys (additionalProperties, i.e. a map) accepts any of them.
      for (const key of Reflect.ownKeys(target)) {
        if (typeof key === "string") seen.add(`${pointer}/${key}`);
      }
      return Reflect.ownKeys(target);
    },
  });
}

function allPointers(value, pointer, out) {
  if (value === null || typeof value !== "object") return out;
  for (const [key, child] of Object.entries(value)) {
    const childPointer = `${pointer}/${key}`;
    out.push(childPointer);
    allPointers(child, childPointer, out);
  }
  return out;
}

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const id = `${obj.apiVersion}/${obj.kind}`;
  const entry = { kind: obj.kind, name: obj.metadata?.name ?? "", errors: [], unknown: [] };
  const known = SCHEMAS[id];
  if (!known) {
    entry.errors.push(`no published schema is wired up for ${id}`);
    results.push(entry);
    continue;
  }
  const validate = await loadValidator(...known);
  const seen = new Set();
  const ok = validate(track(obj, "", seen));
  if (!ok) {
    for (const e of validate.errors ?? []) {
      entry.errors.push(`${e.instancePath || "/"} ${e.message ?? e.keyword} ${JSON.stringify(e.params)}`);
    }
  }
  // A field is unknown when the validator never read it and never enumerated its parent.
  // Children of an unknown field are not reported again.
  const unknown = allPointers(obj, "", []).filter((p) => !seen.has(p));
  entry.unknown = unknown.filter((p) => !unknown.some((q) => p !== q && p.startsWith(`${q}/`)));
  results.push(entry);
}
process.stdout.write(JSON.stringify(results));

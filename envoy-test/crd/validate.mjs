// Reads a JSON array of resources on stdin and validates each against the openAPIV3Schema of its
// CRD: Istio's (as packaged by @kubernetes-models/istio) and the Prometheus Operator's
// (@kubernetes-models/prometheus-operator). Prints one JSON result per resource.
import * as extensions from "@kubernetes-models/istio/extensions.istio.io/v1alpha1";
import * as install from "@kubernetes-models/istio/install.istio.io/v1alpha1";
import * as networking from "@kubernetes-models/istio/networking.istio.io/v1";
import * as security from "@kubernetes-models/istio/security.istio.io/v1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "extensions.istio.io/v1alpha1": extensions,
  "install.istio.io/v1alpha1": install,
  "networking.istio.io/v1": networking,
  "security.istio.io/v1": security,
  "monitoring.coreos.com/v1": monitoring,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((doc) => {
  const id = `${doc.kind} ${doc.metadata?.namespace}/${doc.metadata?.name}`;
  const Model = models[doc.apiVersion]?.[doc.kind];
  if (!Model) return { id, valid: false, error: `no schema for ${doc.apiVersion} ${doc.kind}` };
  try {
    new Model(doc).validate();
    return { id, valid: true };
  } catch (e) {
    return { id, valid: false, error: String(e.message) };
  }
});
console.log(JSON.stringify(results));

// Runs one official Node SDK's default credential chain with the environment it is given and prints
// one line: "ok <detail>" with credentials, or "error <message>" without. The test's private CA
// reaches it through NODE_EXTRA_CA_CERTS, not through code.
"use strict";

async function aws() {
  const { fromNodeProviderChain } = require("@aws-sdk/credential-providers");
  const credentials = await fromNodeProviderChain()();
  return `access_key=${credentials.accessKeyId} source=${credentials.$source ? Object.keys(credentials.$source).join(",") : "unknown"}`;
}

async function azure() {
  const { DefaultAzureCredential } = require("@azure/identity");
  // As the Go probe: an application using a private authority host turns instance discovery off in
  // code (no environment variable does it).
  const credential = new DefaultAzureCredential({
    disableInstanceDiscovery: process.env.SDK_PROBE_DISABLE_INSTANCE_DISCOVERY === "true",
  });
  const token = await credential.getToken("https://management.azure.com/.default");
  return `token=${token.token}`;
}

async function google() {
  const { GoogleAuth } = require("google-auth-library");
  const auth = new GoogleAuth({ scopes: ["https://www.googleapis.com/auth/cloud-platform"] });
  const client = await auth.getClient();
  const { token } = await client.getAccessToken();
  // As google-auth for Python: the project from the environment, or looked up with the token.
  const project = await auth.getProjectId().catch(() => "none");
  return `token=${token} project=${project}`;
}

const probes = { aws, azure, google };
const probe = probes[process.argv[2]];
if (!probe) {
  console.error("usage: node probe.js aws|azure|google");
  process.exit(2);
}
probe().then(
  (detail) => {
    console.log(`ok ${detail}`);
    // Keep-alive sockets would hold the process open.
    process.exit(0);
  },
  (err) => {
    // Every failure is one "error" line for the test to read.
    console.log(`error ${`${err?.name ?? "Error"}: ${err?.message ?? err}`.split(/\s+/).join(" ")}`);
    process.exit(1);
  },
);

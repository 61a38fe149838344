// Node clients for the connection matrix, each making `n` calls over its own keep-alive pool:
//   node clients.mjs fetch|sdk BASE_URL N
// fetch: Node's built-in fetch, DynamoDB ListTables as JSON; sdk: the AWS SDK for JavaScript v3
// (DynamoDBClient, its signer a no-op: the proxy signs). Prints one JSON line per call.
import { DynamoDBClient, ListTablesCommand } from "@aws-sdk/client-dynamodb";

const [mode, base, count] = process.argv.slice(2);
const n = Number(count);
const LIMIT_MS = 5000; // a call still waiting by then is reported as a timeout

function withLimit(promise) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("timeout")), LIMIT_MS);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

async function viaFetch() {
  const response = await fetch(`${base}/ddb/`, {
    method: "POST",
    headers: {
      "content-type": "application/x-amz-json-1.0",
      "x-amz-target": "DynamoDB_20120810.ListTables",
    },
    body: "{}",
  });
  const text = await response.text();
  return { status: response.status, ok: response.status === 200 && text.includes("TableNames") };
}

const client = new DynamoDBClient({
  endpoint: `${base}/ddb`,
  region: "us-east-1",
  credentials: { accessKeyId: "unused", secretAccessKey: "unused" },
  signer: { sign: async (request) => request },
  maxAttempts: 1,
});

async function viaSdk() {
  const out = await client.send(new ListTablesCommand({}));
  return { status: out.$metadata.httpStatusCode, ok: Array.isArray(out.TableNames) };
}

for (let i = 0; i < n; i++) {
  const started = performance.now();
  let result;
  try {
    result = await withLimit(mode === "sdk" ? viaSdk() : viaFetch());
  } catch (error) {
    result = { status: null, ok: false, error: String(error && error.message ? error.message : error) };
  }
  console.log(JSON.stringify({ ...result, seconds: (performance.now() - started) / 1000 }));
}
client.destroy();
process.exit(0);

// stoker's Node.js runtime. The node agent starts it as `node [heap flags] bootstrap.mjs` in a
// sandboxed worker. It loads the handler named by _HANDLER ("file.export", CommonJS or ES
// module) from LAMBDA_TASK_ROOT once, then serves invocations one at a time through the
// Lambda Runtime API at AWS_LAMBDA_RUNTIME_API for as long as the worker is kept warm.
//
// Handlers may be async (the returned promise is the result) or callback style
// (handler(event, context, callback)); as on Lambda, a callback's result is sent when the
// event loop is empty unless context.callbackWaitsForEmptyEventLoop is set to false.
// console.* lines are written as TIMESTAMP\tREQUEST_ID\tLEVEL\tMESSAGE; errors are sent as
// {errorType, errorMessage, stackTrace}.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import util from "node:util";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const SELF = fileURLToPath(import.meta.url);
const API = process.env.AWS_LAMBDA_RUNTIME_API || "";
const RUNTIME = "/2018-06-01/runtime";
const HOST = API.slice(0, API.lastIndexOf(":"));
const PORT = Number(API.slice(API.lastIndexOf(":") + 1));
// one kept-alive connection to the node agent; idle, it does not keep the event loop alive
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

let requestId; // the invocation in progress (undefined during init, as on Lambda)
let initialized = false;

// -- the Runtime API ----------------------------------------------------------------------

function call(method, urlPath, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(body);
    const allHeaders = data ? { ...headers, "content-type": "application/json", "content-length": data.length } : headers;
    const req = http.request({ host: HOST, port: PORT, method, path: urlPath, agent, headers: allHeaders }, (res) => {
      const chunks = [];
      res.on("data", (chunk) => chunks.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(data);
  });
}

function headerSafe(text) {
  return String(text).replace(/[^\x20-\x7e]/g, "?").slice(0, 1024);
}

async function postError(urlPath, error) {
  const res = await call("POST", urlPath, JSON.stringify(error), {
    "lambda-runtime-function-error-type": headerSafe(error.errorType),
  });
  if (res.status >= 300 && res.status !== 413) {
    process.stderr.write(`stoker bootstrap: the Runtime API answered ${res.status} to ${urlPath}: ${res.body}\n`);
  }
}

async function postResult(id, outcome) {
  if (outcome.error !== undefined) {
    const error = errorObject(outcome.error);
    console.error("Invoke Error", JSON.stringify(error));
    return postError(`${RUNTIME}/invocation/${id}/error`, error);
  }
  let body;
  try {
    body = JSON.stringify(outcome.value === undefined ? null : outcome.value) ?? "null";
  } catch (err) {
    const error = { errorType: "Runtime.MarshalError", errorMessage: `Unable to stringify response body: ${err.message}`,
                    stackTrace: [] };
    console.error("Invoke Error", JSON.stringify(error));
    return postError(`${RUNTIME}/invocation/${id}/error`, error);
  }
  const res = await call("POST", `${RUNTIME}/invocation/${id}/response`, body);
  if (res.status >= 300 && res.status !== 413) {
    process.stderr.write(`stoker bootstrap: the Runtime API answered ${res.status} to a response: ${res.body}\n`);
  }
}

// -- logs and errors ------------------------------------------------------------------------

function logLine(level, args) {
  return `${new Date().toISOString()}\t${requestId}\t${level}\t${util.format(...args)}\n`;
}

for (const [method, level] of [["log", "INFO"], ["info", "INFO"], ["warn", "WARN"], ["error", "ERROR"],
                               ["debug", "DEBUG"]]) {
  console[method] = (...args) => { process.stdout.write(logLine(level, args)); };
}
console.trace = (...args) => {
  const trace = new Error(util.format(...args));
  trace.name = "Trace";
  process.stdout.write(logLine("TRACE", [userStack(trace).join("\n")]));
};

class RuntimeError extends Error {
  constructor(type, message) {
    super(message);
    this.name = type;
    this.internal = true; // its stack is the bootstrap's, not the function's
  }
}

function userStack(err) {
  if (typeof err?.stack !== "string") return [];
  return err.stack.split("\n").filter((line) => !line.includes(SELF));
}

function errorObject(err) {
  if (err instanceof Error) {
    return { errorType: err.name || "Error", errorMessage: err.message ?? "", stackTrace: err.internal ? [] : userStack(err) };
  }
  if (err !== null && typeof err === "object" && (err.errorType || err.errorMessage)) {
    return { errorType: String(err.errorType || "Error"), errorMessage: String(err.errorMessage || ""),
             stackTrace: Array.isArray(err.stackTrace) ? err.stackTrace : [] };
  }
  return { errorType: typeof err, errorMessage: String(err), stackTrace: [] };
}

// -- the handler --------------------------------------------------------------------------

function isModulePackage(dir) {
  // the "type" of the nearest package.json decides, as for node itself
  for (let d = dir; ; d = path.dirname(d)) {
    const file = path.join(d, "package.json");
    if (fs.existsSync(file)) {
      try {
        return JSON.parse(fs.readFileSync(file, "utf8")).type === "module";
      } catch {
        return false;
      }
    }
    if (path.dirname(d) === d) return false;
  }
}

async function loadModule(file) {
  const asModule = file.endsWith(".mjs") || (file.endsWith(".js") && isModulePackage(path.dirname(file)));
  if (!asModule) {
    try {
      return createRequire(file)(file);
    } catch (err) {
      if (err?.code !== "ERR_REQUIRE_ESM" && err?.code !== "ERR_REQUIRE_ASYNC_MODULE") throw err;
    }
  }
  return import(pathToFileURL(file).href);
}

async function loadHandler() {
  const spec = process.env._HANDLER || "";
  const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
  const dot = spec.lastIndexOf(".");
  if (dot <= 0) throw new RuntimeError("Runtime.MalformedHandlerName", `Bad handler ${spec}: write it as file.export`);
  const moduleName = spec.slice(0, dot);
  const exportName = spec.slice(dot + 1);
  const base = path.resolve(root, moduleName);
  const file = [".js", ".mjs", ".cjs"].map((ext) => base + ext).find((f) => fs.existsSync(f));
  if (!file) {
    throw new RuntimeError("Runtime.ImportModuleError", `Error: Cannot find module '${moduleName}' (no ${moduleName}.js, ` +
                           `.mjs or .cjs in the bundle)`);
  }
  let mod;
  try {
    mod = await loadModule(file);
  } catch (err) {
    if (err instanceof SyntaxError) {
      const error = new RuntimeError("Runtime.UserCodeSyntaxError", `${err.name}: ${err.message}`);
      error.internal = false;
      error.stack = err.stack;
      throw error;
    }
    if (err?.code === "MODULE_NOT_FOUND" || err?.code === "ERR_MODULE_NOT_FOUND") {
      throw new RuntimeError("Runtime.ImportModuleError", `Error: ${err.message.split("\n")[0]}`);
    }
    throw err; // the module's own init code failed
  }
  const handler = mod?.[exportName];
  if (typeof handler !== "function") {
    throw new RuntimeError("Runtime.HandlerNotFound", `${spec} is undefined or not exported`);
  }
  return handler;
}

// -- one invocation -----------------------------------------------------------------------

function makeContext(invocation, finish) {
  const env = process.env;
  return {
    callbackWaitsForEmptyEventLoop: true,
    awsRequestId: invocation.id,
    invokedFunctionArn: invocation.arn,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    identity: undefined,
    clientContext: undefined,
    getRemainingTimeInMillis: () => Math.max(0, invocation.deadline - Date.now()),
    // the legacy completion methods: they answer at once
    done: (err, value) => finish(err, value),
    succeed: (value) => finish(null, value),
    fail: (err) => finish(err ?? new Error("handled"), undefined),
  };
}

function runInvocation(handler, invocation) {
  let resolve;
  const outcome = new Promise((r) => { resolve = r; });
  let settled = false;
  let callbackResult; // [err, value], once the handler called back
  const finish = (err, value) => {
    if (settled) return;
    settled = true;
    process.removeListener("beforeExit", onEmptyLoop);
    resolve(err !== null && err !== undefined ? { error: err } : { value });
  };
  // the event loop is empty: the callback's result, or null for a handler that never answered
  const onEmptyLoop = () => finish(...(callbackResult ?? [null, null]));
  const context = makeContext(invocation, finish);
  let returnedPromise = false;
  const callback = (err, value) => {
    if (settled || callbackResult) return;
    callbackResult = [err, value];
    if (returnedPromise || context.callbackWaitsForEmptyEventLoop === false) finish(err, value);
  };
  let returned;
  try {
    returned = handler(invocation.event, context, callback);
  } catch (err) {
    finish(err ?? new Error(`the handler threw ${err}`));
    return outcome;
  }
  if (settled) return outcome;
  if (returned && typeof returned.then === "function") {
    returnedPromise = true;
    if (callbackResult) finish(...callbackResult);
    Promise.resolve(returned).then(
      (value) => finish(null, value),
      (err) => finish(err ?? new Error(`the handler's promise was rejected with ${err}`)),
    );
  } else {
    process.once("beforeExit", onEmptyLoop);
  }
  return outcome;
}

async function nextInvocation() {
  const res = await call("GET", `${RUNTIME}/invocation/next`);
  if (res.status !== 200) throw new Error(`the Runtime API answered ${res.status} to next: ${res.body}`);
  const text = res.body.toString("utf8");
  const traceId = res.headers["lambda-runtime-trace-id"];
  if (traceId) process.env._X_AMZN_TRACE_ID = traceId;
  else delete process.env._X_AMZN_TRACE_ID;
  return {
    id: res.headers["lambda-runtime-aws-request-id"],
    deadline: Number(res.headers["lambda-runtime-deadline-ms"]) || Date.now() + 3000,
    arn: res.headers["lambda-runtime-invoked-function-arn"],
    text,
  };
}

// -- the worker's life --------------------------------------------------------------------

async function fatal(err, errorType) {
  const error = errorObject(err);
  if (errorType) {
    error.errorMessage = `${error.errorType}: ${error.errorMessage}`;
    error.errorType = errorType;
  }
  console.error(initialized ? "Invoke Error" : "Init Error", JSON.stringify(error));
  try {
    if (requestId !== undefined) await postError(`${RUNTIME}/invocation/${requestId}/error`, error);
    else if (!initialized) await postError(`${RUNTIME}/init/error`, error);
  } finally {
    process.exit(129);
  }
}

process.on("uncaughtException", (err) => fatal(err));
process.on("unhandledRejection", (reason) => fatal(reason, "Runtime.UnhandledPromiseRejection"));

async function main() {
  if (!HOST || !PORT) {
    process.stderr.write("stoker bootstrap: AWS_LAMBDA_RUNTIME_API is not set (host:port)\n");
    process.exit(2);
  }
  let handler;
  try {
    handler = await loadHandler();
  } catch (err) {
    const error = errorObject(err);
    console.error("Init Error", JSON.stringify(error));
    await postError(`${RUNTIME}/init/error`, error);
    process.exit(1);
  }
  initialized = true;
  for (;;) {
    const invocation = await nextInvocation();
    requestId = invocation.id;
    let outcome;
    try {
      invocation.event = invocation.text ? JSON.parse(invocation.text) : null;
      outcome = await runInvocation(handler, invocation);
    } catch (err) {
      outcome = { error: err };
    }
    await postResult(invocation.id, outcome);
    requestId = undefined;
  }
}

main().catch((err) => {
  process.stderr.write(`stoker bootstrap: ${err?.stack || err}\n`);
  process.exit(1);
});

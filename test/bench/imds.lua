-- wrk script for make bench. IMDS_MODE=put sends the IMDSv2 token PUT;
-- otherwise every request carries IMDS_TOKEN (an IMDSv2 token reused, as
-- SDKs do). done() prints one machine-readable line for the harness.
local mode = os.getenv("IMDS_MODE") or "get"
local token = os.getenv("IMDS_TOKEN") or ""

if mode == "put" then
  wrk.method = "PUT"
  wrk.headers["X-aws-ec2-metadata-token-ttl-seconds"] = "21600"
elseif token ~= "" then
  wrk.headers["X-aws-ec2-metadata-token"] = token
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end

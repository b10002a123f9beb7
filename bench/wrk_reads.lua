-- wrk script for bench/reads.py: GET a random request of a list, each with its own credentials.
--
-- wrk -t2 -c16 -d10s -s bench/wrk_reads.lua http://127.0.0.1:PORT -- REQUESTS_FILE
--
-- REQUESTS_FILE has one request a line: "PATH<TAB>AUTHORIZATION" (e.g. a member's own JWT for
-- /api/v1/me/, or a staff JWT and a random member's id for /api/v1/members/{id}/tier/).
-- done() prints one line, "BENCH_JSON {...}", with the counts and latency percentiles (microseconds).

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local requests = {}
ok_count = 0
status_count = 0

function init(args)
  for line in io.lines(args[1]) do
    local path, authorization = line:match("^([^\t]+)\t(.+)$")
    if path then
      table.insert(requests, wrk.format("GET", path, {
        ["Accept"] = "application/json",
        ["Authorization"] = authorization,
      }))
    end
  end
  math.randomseed(os.time() + tid * 7919)
end

function request()
  return requests[math.random(#requests)]
end

function response(status, response_headers, response_body)
  status_count = status_count + 1
  if status >= 200 and status < 300 then
    ok_count = ok_count + 1
  end
end

function done(summary, latency, requests)
  local ok, responses = 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("ok_count")
    responses = responses + thread:get("status_count")
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "responses": %d, "ok": %d, "duration_us": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, '
      .. '"mean_us": %.1f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, responses, ok, summary.duration,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max
  ))
end

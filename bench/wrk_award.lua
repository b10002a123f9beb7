-- wrk script for bench/award_throughput.py: POST {"points": 1} to a random member of a pool.
--
-- wrk -t2 -c8 -d10s -s bench/wrk_award.lua http://127.0.0.1:PORT \
--     -- IDS_FILE PATH_PREFIX PATH_SUFFIX API_KEY NONCE
--
-- Each request carries a unique Idempotency-Key (NONCE-thread-counter), as real clients send one.
-- done() prints one line, "BENCH_JSON {...}", with the counts and latency percentiles (microseconds).

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local ids = {}
local prefix, suffix, nonce
local headers = {}
local body = '{"points": 1}'
local counter = 0
ok_count = 0
status_count = 0

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      table.insert(ids, line)
    end
  end
  prefix, suffix, nonce = args[2], args[3], args[5]
  headers["Content-Type"] = "application/json"
  headers["Accept"] = "application/json"
  headers["X-Api-Key"] = args[4]
  math.randomseed(os.time() + tid * 7919)
end

function request()
  counter = counter + 1
  headers["Idempotency-Key"] = nonce .. "-" .. tid .. "-" .. counter
  return wrk.format("POST", prefix .. ids[math.random(#ids)] .. suffix, headers, body)
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

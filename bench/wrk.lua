-- bench/wrk.lua: the one wrk script behind every scenario of bench/run.sh.
--
--   wrk ... -s bench/wrk.lua URL -- METHOD PATH [TOKENS_FILE|-] [BODY]
--
-- TOKENS_FILE holds one bearer token (an access or a personal token) a line; each
-- request takes the next token in turn (each wrk thread starting at a different one),
-- so the users' tokens are spread evenly over the connections and over time. With a BODY, requests carry
-- `Content-Type: application/json`. Requests are built once in init(), so the script
-- costs next to nothing per request.
--
-- At the end one machine-readable line is printed, which bench/run.sh parses:
--   BENCH requests=... duration_us=... rps=... p50_us=... p99_us=... generated=...
--         status_2xx=... status_201=... non2xx=... err_connect=... ...
-- `generated` counts requests handed to wrk for sending; generated - requests is
-- what was still in flight when wrk stopped (wrk abandons those).

local threads = {}
local next_id = 1

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local method, path, tokens_file, body = args[1], args[2], args[3], args[4]
   local headers = {}
   if body ~= nil and body ~= "" then
      headers["Content-Type"] = "application/json"
   else
      body = nil
   end
   reqs = {}
   if tokens_file ~= nil and tokens_file ~= "-" then
      for line in io.lines(tokens_file) do
         if #line > 0 then
            headers["Authorization"] = "Bearer " .. line
            reqs[#reqs + 1] = wrk.format(method, path, headers, body)
         end
      end
   else
      reqs[1] = wrk.format(method, path, headers, body)
   end
   nreqs = #reqs
   -- spread the threads' starting points over the token list
   cursor = ((id - 1) * 17) % nreqs
   generated = 0
   statuses = {}
end

function request()
   generated = generated + 1
   cursor = cursor % nreqs + 1
   return reqs[cursor]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local generated_total, by_status = 0, {}
   for _, thread in ipairs(threads) do
      generated_total = generated_total + (thread:get("generated") or 0)
      for status, n in pairs(thread:get("statuses") or {}) do
         by_status[status] = (by_status[status] or 0) + n
      end
   end
   local ok, created, non2xx, codes = 0, 0, 0, {}
   for status, n in pairs(by_status) do
      if status >= 200 and status < 300 then ok = ok + n else non2xx = non2xx + n end
      if status == 201 then created = created + n end
      codes[#codes + 1] = status .. ":" .. n
   end
   table.sort(codes)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
      "generated=%d status_2xx=%d status_201=%d non2xx=%d err_connect=%d err_read=%d " ..
      "err_write=%d err_timeout=%d codes=%s\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      generated_total, ok, created, non2xx, e.connect, e.read, e.write, e.timeout,
      table.concat(codes, ",")))
end

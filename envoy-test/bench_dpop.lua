-- wrk script for the DPoP rows of envoy-test/bench.py. Environment:
--   BENCH_REQUESTS  file of requests, one a line: "<scheme> <token>[ <DPoP proof>]"
--   BENCH_START     the line to start after: each line is sent once, in order (a proof is good
--                   once), and a run of wrk -t1 that completes n requests has used lines
--                   BENCH_START + 1 .. BENCH_START + n + 1 (wrk calls request() once beforehand)
--   BENCH_LIMIT     how many lines one run loads (default 60000), so a run's memory is bounded
-- Every request is formatted once in init(); request() only takes the next.

local requests = {}
local n, cursor = 0, 0

function request()
   cursor = cursor + 1
   return requests[cursor]
end

function init(args)
   local path = assert(os.getenv("BENCH_REQUESTS"), "BENCH_REQUESTS: the file of requests")
   local start = tonumber(os.getenv("BENCH_START") or "0")
   local limit = tonumber(os.getenv("BENCH_LIMIT") or "60000")
   local line_no = 0
   for line in io.lines(path) do
      line_no = line_no + 1
      if line_no > start + limit then break end
      if line_no > start then
         local scheme, token, proof = line:match("^(%S+) (%S+) ?(%S*)$")
         local headers = { ["Authorization"] = scheme .. " " .. token }
         if proof ~= "" then headers["DPoP"] = proof end
         n = n + 1
         requests[n] = wrk.format("GET", "/", headers)
      end
   end
   assert(n > 0, "no requests left in " .. path)
end

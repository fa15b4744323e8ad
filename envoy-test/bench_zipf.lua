-- wrk script for the many-users workload of envoy-test/bench.py. Environment:
--   BENCH_TOKENS  file of tokens, one a line: one per user, the most active first
--   BENCH_ZIPF_S  Zipf exponent s (default 1.0): the user of rank i is picked with weight 1/i^s
--   BENCH_SEED    each thread seeds its generator with BENCH_SEED * 1000 + its id (default 1)
--   BENCH_ORDER   "zipf" (default), or "seq": the tokens in file order after line BENCH_START
--                 (cyclically), so a run of wrk -t1 that completes n requests has sent n
--                 consecutive tokens (from BENCH_START + 2: wrk calls request() once beforehand)
-- Every request is formatted once in init(); request() only picks one.

local requests, cdf = {}, {}
local n, cursor = 0, 0

-- Runs in wrk's main Lua state, once per thread before the thread's init().
local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("id", threads)
end

-- Defined at load time: wrk sends a single fixed request unless the main state has a request().
function request()
   local r = math.random() * cdf[n]
   local lo, hi = 1, n
   while lo < hi do -- the first rank whose cumulative weight reaches r
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < r then lo = mid + 1 else hi = mid end
   end
   return requests[lo]
end

local function next_in_order()
   cursor = cursor % n + 1
   return requests[cursor]
end

function init(args)
   local path = assert(os.getenv("BENCH_TOKENS"), "BENCH_TOKENS: the file of tokens")
   for token in io.lines(path) do
      n = n + 1
      requests[n] = wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. token })
   end
   assert(n > 0, "no tokens in " .. path)
   local s = tonumber(os.getenv("BENCH_ZIPF_S") or "1.0")
   local total = 0
   for rank = 1, n do
      total = total + rank ^ -s
      cdf[rank] = total
   end
   math.randomseed(tonumber(os.getenv("BENCH_SEED") or "1") * 1000 + id)
   if os.getenv("BENCH_ORDER") == "seq" then
      cursor = tonumber(os.getenv("BENCH_START") or "0") % n
      request = next_in_order
   end
end

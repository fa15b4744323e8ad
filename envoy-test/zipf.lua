-- wrk script: many users, each with a token of their own, requested with Zipf popularity: the
-- user of rank i (the i-th line of $ZIPF_TOKENS) is requested with weight 1 / i^$ZIPF_S.
local requests, cdf = {}, {}

function init(args)
  local s = tonumber(os.getenv("ZIPF_S") or "1.0")
  local total = 0
  for token in io.lines(os.getenv("ZIPF_TOKENS")) do
    local rank = #requests + 1
    requests[rank] = wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. token })
    total = total + 1 / rank ^ s
    cdf[rank] = total
  end
  for rank = 1, #cdf do
    cdf[rank] = cdf[rank] / total
  end
  -- Each wrk thread has its own Lua state: seed each apart.
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
end

function request()
  local u = math.random()
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return requests[lo]
end

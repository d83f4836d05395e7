-- Shared by the wrk scripts of `python -m benchmarks`: count responses by status in each
-- thread and print one JSON line at the end, which benchmarks/api_ingest.py reads.
--
-- A script that requires this module defines request(); this module defines setup(),
-- response() and done(). Settings come from the environment, which every wrk thread sees.
local M = {}

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

statuses = {}
-- Requests sent whose response has not come back; wrk stops mid-request at the end of the
-- run, and the benchmark checks those orders separately (written or not, never twice).
inflight = {}
M.track = os.getenv("PATRON_WRK_TRACK_IDS") == "1"
-- The response field that names what was sent (orders: external_id; checkouts: order_number).
M.pattern = '"' .. (os.getenv("PATRON_WRK_ID_FIELD") or "external_id") .. '":"([^"]+)"'

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if M.track then
      local id = body and string.match(body, M.pattern)
      if id then inflight[id] = nil end
   end
end

function M.sent(id)
   inflight[id] = true
end

local function json_string(s)
   return '"' .. string.gsub(s, '["\\]', '\\%0') .. '"'
end

function done(summary, latency, requests)
   local merged, cut = {}, {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses") or {}) do
         merged[status] = (merged[status] or 0) + n
      end
      for id in pairs(thread:get("inflight") or {}) do
         table.insert(cut, json_string(id))
      end
   end
   local parts = {}
   for status, n in pairs(merged) do
      table.insert(parts, string.format('"%d":%d', status, n))
   end
   local e = summary.errors
   io.write(string.format(
      'PATRON_WRK_JSON {"requests":%d,"seconds":%.6f,"p50_ms":%.3f,"p99_ms":%.3f,' ..
      '"max_ms":%.3f,"statuses":{%s},"errors":{"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d},"inflight":[%s]}\n',
      summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000, table.concat(parts, ","),
      e.connect, e.read, e.write, e.status, e.timeout, table.concat(cut, ",")))
end

return M

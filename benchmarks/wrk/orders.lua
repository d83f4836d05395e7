-- Distinct valid single orders for POST /api/v1/orders, the way tills send them.
--
-- Environment: PATRON_API_KEY (a bearer key allowed every store and channel),
-- PATRON_WRK_RUN (a tag making the external ids of this run unique),
-- PATRON_WRK_CUSTOMERS (how many customers the imported orders came from: their phones are
-- those of benchmarks/data.py's OrderStream.customer(n), so identity resolution finds them),
-- PATRON_WRK_STORES (store codes S000.. up to this count).
local report = require("report")

local key = os.getenv("PATRON_API_KEY")
local run = os.getenv("PATRON_WRK_RUN") or "R"
local customers = tonumber(os.getenv("PATRON_WRK_CUSTOMERS") or "1000")
local stores = tonumber(os.getenv("PATRON_WRK_STORES") or "20")
local headers = {["Authorization"] = "Bearer " .. (key or ""),
                 ["Content-Type"] = "application/json"}

-- sku, name, category, unit price in fen
local catalog = {
   {"LATTE", "Latte", "coffee", 2800}, {"AMERICANO", "Americano", "coffee", 2200},
   {"FLATWHITE", "Flat white", "coffee", 3000}, {"OOLONG", "Oolong", "tea", 1800},
   {"CROISSANT", "Croissant", "bakery", 1650}, {"BAGEL", "Bagel", "bakery", 1400},
   {"COOKIE", "Cookie", "snacks", 880}, {"MASK", "Face mask", "beauty", 1990},
   {"BEANS250", "Beans 250g", "grocery", 8900}, {"MILK", "Milk", "grocery", 1550},
}
local mobile_prefixes = {"38", "39", "50", "51", "52", "58", "59", "86", "87", "88", "35",
                         "36", "37"}
local pay_methods = {"wechat_pay", "wechat_pay", "alipay", "alipay", "bank_card", "cash"}
-- A till sends a sale as it happens: nine orders in ten are dated at the moment of the request.
-- The tenth arrives late, dated up to three days back, as a delivery platform's or an offline
-- till's queued sale does (ingestion's late-order path: a purchase day between a customer's
-- first and last). Every date is in the past, and after the imported orders (2025).
local late_share = 0.1
local late_seconds = 3 * 86400

local thread_id = 0
local counter = 0

local function yuan(fen)
   return string.format("%d.%02d", math.floor(fen / 100), fen % 100)
end

-- The customer numbered n exactly as OrderStream.customer(n) makes them.
local function identifiers_of(n, channel)
   local ids = {}
   local phone = nil
   if n % 10 ~= 9 then
      phone = "1" .. mobile_prefixes[n % #mobile_prefixes + 1]
         .. string.format("%08d", (n * 7919 + 1234567) % 100000000)
      table.insert(ids, '"phone":"' .. phone .. '"')
   end
   local member = nil
   if n % 5 < 3 or phone == nil then member = string.format("M%08d", n) end
   if phone == nil then
      table.insert(ids, '"member_code":"' .. member .. '"')
   elseif channel == "pos" and member and math.random() < 0.8 then
      table.insert(ids, '"member_code":"' .. member .. '"')
   end
   if channel == "mini_program" and n % 2 == 0 then
      table.insert(ids, string.format('"wechat_openid":"oWX%012d"', n))
   elseif channel == "meituan" then
      table.insert(ids, string.format('"platform_buyer_id":"mt%d"', n))
   end
   return "{" .. table.concat(ids, ",") .. "}"
end

local function purchased_at()
   local now = os.time() - 1 -- a second back: never ahead of the server's clock
   if math.random() < late_share then
      return now - math.random(60, late_seconds)
   end
   return now
end

function init(args)
   thread_id = id or 0 -- set by setup() in report.lua
   math.randomseed(os.time() + thread_id * 7919)
end

function request()
   counter = counter + 1
   local external_id = string.format("%s-%d-%d", run, thread_id, counter)
   local roll = math.random()
   local channel = roll < 0.7 and "pos" or (roll < 0.9 and "mini_program" or "meituan")
   -- 10 % anonymous, 80 % known customers (regulars more often), 10 % first-time buyers.
   local who = math.random()
   local identifiers = "{}"
   if who >= 0.1 then
      local n
      if who < 0.9 then
         n = math.floor(customers * math.random() ^ 2)
      else
         n = customers * 100 + thread_id * 10000000 + counter
      end
      identifiers = identifiers_of(n, channel)
   end
   local lines, total = {}, 0
   for _ = 1, math.random(1, 3) do
      local item = catalog[math.random(#catalog)]
      local qty = math.random(1, 3)
      total = total + qty * item[4]
      table.insert(lines, string.format(
         '{"sku":"%s","name":"%s","category":"%s","quantity":"%d","unit_price":"%s"}',
         item[1], item[2], item[3], qty, yuan(item[4])))
   end
   local body = string.format(
      '{"external_id":"%s","channel":"%s","store":"S%03d","purchased_at":"%s",' ..
      '"identifiers":%s,"lines":[%s],"payments":[{"method":"%s","amount":"%s"}]}',
      external_id, channel, math.random(0, stores - 1),
      os.date("!%Y-%m-%dT%H:%M:%S+00:00", purchased_at()),
      identifiers, table.concat(lines, ","), pay_methods[math.random(#pay_methods)],
      yuan(total))
   report.sent(external_id)
   return wrk.format("POST", "/api/v1/orders", headers, body)
end

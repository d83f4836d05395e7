-- Distinct checkout commits for POST /api/v1/checkout/commits, the way tills send them: a
-- member's basket, a third of them paying 10 points, the rest in cash or WeChat Pay.
--
-- Environment: PATRON_API_KEY (a cashier key allowed every store), PATRON_WRK_RUN (a tag making
-- the keys and order numbers of this run unique), PATRON_WRK_MEMBERS (a file of member codes,
-- one per line), PATRON_WRK_STORE (the store code).
local report = require("report")

local key = os.getenv("PATRON_API_KEY")
local run = os.getenv("PATRON_WRK_RUN") or "R"
local store = os.getenv("PATRON_WRK_STORE") or "CK01"
local headers = {["Authorization"] = "Bearer " .. (key or ""),
                 ["Content-Type"] = "application/json"}

-- sku, category, unit price in fen
local catalog = {
   {"LATTE", "coffee", 2800}, {"AMERICANO", "coffee", 2200}, {"OOLONG", "tea", 1800},
   {"CROISSANT", "bakery", 1650}, {"COOKIE", "snacks", 880}, {"BEANS250", "grocery", 8900},
}
local tenders = {"wechat_pay", "wechat_pay", "alipay", "cash"}

local members = {}
local thread_id = 0
local counter = 0

function init(args)
   thread_id = id or 0 -- set by setup() in report.lua
   math.randomseed(os.time() + thread_id * 7919)
   for line in io.lines(os.getenv("PATRON_WRK_MEMBERS")) do
      if line ~= "" then table.insert(members, line) end
   end
end

function request()
   counter = counter + 1
   local number = string.format("%s-%d-%d", run, thread_id, counter)
   local lines, total = {}, 0
   for _ = 1, math.random(1, 3) do
      local item = catalog[math.random(#catalog)]
      local qty = math.random(1, 2)
      total = total + qty * item[3]
      table.insert(lines, string.format(
         '{"sku":"%s","category":"%s","quantity":"%d","unit_price_fen":%d}',
         item[1], item[2], qty, item[3]))
   end
   local points = math.random() < 0.33 and 10 or 0 -- 10 points = 10 fen at 100 per yuan
   local body = string.format(
      '{"idempotency_key":"%s","order_number":"%s","store":"%s",' ..
      '"member":{"member_code":"%s"},"lines":[%s],"redeem_points":%d,' ..
      '"payments":[{"method":"%s","amount_fen":%d}]}',
      number, number, store, members[math.random(#members)], table.concat(lines, ","),
      points, tenders[math.random(#tenders)], total - points)
   report.sent(number)
   return wrk.format("POST", "/api/v1/checkout/commits", headers, body)
end

-- The anchor: GET /healthz, under the same wrk settings as the orders.
local report = require("report")

local req

function init(args)
   req = wrk.format("GET", "/healthz")
end

function request()
   return req
end

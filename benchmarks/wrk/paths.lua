-- GET requests cycling through the paths listed (one per line) in the file named by
-- PATRON_WRK_PATHS, with the bearer key PATRON_API_KEY: the till's customer lookups.
local report = require("report")

local headers = {["Authorization"] = "Bearer " .. (os.getenv("PATRON_API_KEY") or "")}
local paths = {}
local next_path = 1

function init(args)
   for line in io.lines(os.getenv("PATRON_WRK_PATHS")) do
      if line ~= "" then table.insert(paths, line) end
   end
   -- Threads start at different places in the list.
   next_path = ((id or 0) * 997) % #paths + 1
end

function request()
   local path = paths[next_path]
   next_path = next_path % #paths + 1
   return wrk.format("GET", path, headers)
end

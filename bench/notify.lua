-- wrk script: POST signed MPS notifications of mixed types, each one unique (a new SessionId), spread
-- over the benchmark's registered tasks. Templates come one JSON per line from the file in BENCH_PAYLOADS.
local templates = {}
local counter = 0
local tasks = tonumber(os.getenv("BENCH_TASKS") or "64")

-- Unique across runs and threads: BENCH_RUN names the run, setup() numbers the threads.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("prefix", (os.getenv("BENCH_RUN") or "run") .. "-" .. threads)
end

function init(args)
  for line in io.lines(os.getenv("BENCH_PAYLOADS")) do
    templates[#templates + 1] = line
  end
end

request = function()
  counter = counter + 1
  local template = templates[(counter % #templates) + 1]
  local body = template:gsub("__SEQ__", prefix .. "-" .. counter, 1)
  body = body:gsub("__TASK__", tostring(counter % tasks), 1)
  return wrk.format("POST", "/v1/notifications", {["Content-Type"] = "application/json"}, body)
end

-- BENCH_LIMIT > 0: stop once that many answers came back (the run's -d is then only a ceiling).
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
if limit > 0 then
  local answered = 0
  response = function(status, headers, body)
    answered = answered + 1
    if answered >= limit then
      wrk.thread:stop()
    end
  end
end

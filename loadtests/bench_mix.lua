-- wrk script of loadtests/bench_mix.py: walk a list of request paths (one per line), in order, wrapping
-- around; thread k of n starts at k/n of the list so that threads do not ask for the same URL in step.
--   wrk -t2 -c64 -d10s -s loadtests/bench_mix.lua http://127.0.0.1:8000 -- urls.txt 2
-- Requests are formatted once in init (with wrk's -H headers and Host), not per request.

local next_index = 0 -- main state only: the index handed to the next thread

function setup(thread)
  thread:set("thread_index", next_index)
  next_index = next_index + 1
end

local requests, count, position = {}, 0, 0

function init(args)
  local file = assert(io.open(args[1], "r"), "bench_mix.lua: cannot open the URL list " .. tostring(args[1]))
  for line in file:lines() do
    if line ~= "" then
      count = count + 1
      requests[count] = wrk.format("GET", line)
    end
  end
  file:close()
  assert(count > 0, "bench_mix.lua: the URL list is empty")
  local threads = tonumber(args[2]) or 1
  position = math.floor(count * (thread_index or 0) / threads)
end

function request()
  position = position % count + 1
  return requests[position]
end

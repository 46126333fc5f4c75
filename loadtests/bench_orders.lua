-- wrk script of loadtests/bench_orders.py: POST /api/consumer/orders with a fresh Idempotency-Key each time,
-- one line of a random product among the first `products` ids of a list, signed in as one of the shoppers
-- whose access tokens are in a file (one per line), round robin.
--   wrk -t2 -c32 -d10s -s loadtests/bench_orders.lua URL -- tokens.txt products.txt
local thread_counter = 0

function setup(thread)
  thread:set("thread_index", thread_counter)
  thread_counter = thread_counter + 1
end

local tokens, products, sent = {}, {}, 0

local function lines(path)
  local out = {}
  local file = assert(io.open(path, "r"), "bench_orders.lua: cannot open " .. tostring(path))
  for line in file:lines() do
    if line ~= "" then
      out[#out + 1] = line
    end
  end
  file:close()
  return out
end

function init(args)
  tokens = lines(args[1])
  products = lines(args[2])
  math.randomseed(os.time() + (thread_index or 0))
end

function request()
  sent = sent + 1
  local token = tokens[(sent + (thread_index or 0) * 7919) % #tokens + 1]
  local product = products[math.random(#products)]
  local key = string.format("bench-%d-%d-%d", thread_index or 0, os.time(), sent)
  local body = string.format('{"lines":[{"product_id":%s,"quantity":1}]}', product)
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = key,
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", "/api/consumer/orders", headers, body)
end

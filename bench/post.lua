-- wrk script: POST one image generation per request and count every status.
--
-- Configured through the environment (read by each wrk thread):
--   BENCH_KEY      API key sent as "Authorization: Bearer <key>" (required)
--   BENCH_PATH     request path   (default /v1/openai/images/generations)
--   BENCH_BODY     JSON body      (default: dall-e-2, 1024x1024, response_format url)
--   BENCH_BUDGET   requests per connection (needs BENCH_THREAD_CONNECTIONS, the number of
--                  connections each wrk thread holds); once a thread has sent its share its
--                  connections stay idle, so the run ends with nothing in flight and every
--                  request sent is accounted for
--   BENCH_KEYS_FILE  a file of API keys, one a line (replaces BENCH_KEY): every request
--                  carries one picked at random, so the gateway sees many distinct keys
--                  (the requests are built once, in init(), and only picked per request)
--
-- At the end it prints one line "BENCH_JSON {...}" for bench/run.py to parse.

local key = os.getenv("BENCH_KEY")
local keys_file = os.getenv("BENCH_KEYS_FILE")
if keys_file == "" then
   keys_file = nil
end
if (key == nil or key == "") and keys_file == nil then
   error("BENCH_KEY (or BENCH_KEYS_FILE) is not set")
end

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/openai/images/generations"
wrk.body = os.getenv("BENCH_BODY")
   or '{"model":"openai/dall-e-2","prompt":"a lighthouse at dusk, benchmark",'
   .. '"size":"1024x1024","response_format":"url"}'
wrk.headers["Content-Type"] = "application/json"
if keys_file == nil then
   wrk.headers["Authorization"] = "Bearer " .. key
end

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

statuses = {}
sample = nil

local budget = tonumber(os.getenv("BENCH_BUDGET") or "")
local sent = 0

-- One pre-built request per key; defined only with a keys file, because a script with a
-- request() function makes wrk call it for every request (static requests are cheaper).
local prebuilt = {}
if keys_file ~= nil then
   function request()
      return prebuilt[math.random(#prebuilt)]
   end
end

function init(args)
   if keys_file ~= nil then
      local file = assert(io.open(keys_file, "r"))
      for line in file:lines() do
         if line ~= "" then
            local headers = {
               ["Content-Type"] = "application/json",
               ["Authorization"] = "Bearer " .. line,
            }
            table.insert(prebuilt, wrk.format("POST", wrk.path, headers, wrk.body))
         end
      end
      file:close()
      if #prebuilt == 0 then
         error("no key in BENCH_KEYS_FILE " .. keys_file)
      end
      -- Different threads, different sequences.
      math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
   end
   if budget ~= nil then
      local connections = tonumber(os.getenv("BENCH_THREAD_CONNECTIONS") or "")
      if connections == nil then
         error("BENCH_BUDGET needs BENCH_THREAD_CONNECTIONS")
      end
      local limit = budget * connections
      -- Defined only when needed: wrk skips delay() when it is nil after init(), and
      -- then calls it once before every request of every connection.
      function delay()
         sent = sent + 1
         if sent <= limit then
            return 0
         end
         return 24 * 3600 * 1000
      end
   end
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status ~= 200 and sample == nil then
      sample = string.sub(body or "", 1, 300)
   end
end

local function json_string(s)
   s = string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local counts = {}
   local first_sample = nil
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses") or {}) do
         counts[status] = (counts[status] or 0) + n
      end
      first_sample = first_sample or thread:get("sample")
   end
   local parts = {}
   for status, n in pairs(counts) do
      table.insert(parts, string.format('"%d":%d', status, n))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d},'
      .. '"statuses":{%s},"sample":%s}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      table.concat(parts, ","),
      first_sample and json_string(first_sample) or "null"))
end

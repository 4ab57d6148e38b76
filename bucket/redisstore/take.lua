-- take.lua decides one rate-limit check atomically, exactly as bucket.Take
-- does in Go. Every number is a whole count of microseconds or hits below
-- 2^53, so Lua's doubles hold them exactly.
--
-- KEYS[1]  the counter's key
-- ARGV[1]  algorithm: 0 sliding_window, 1 gcra, 2 token_bucket, 3 fixed_window
-- ARGV[2]  slot width (sliding_window), window (fixed_window) or interval
--          (gcra, token_bucket), in microseconds
-- ARGV[3]  limit (sliding_window, fixed_window) or capacity (gcra, token_bucket)
-- ARGV[4]  hits: 0 peeks; -1 stands for more hits than the capacity
-- ARGV[5]  now in Unix microseconds, or "" to use the server's TIME
-- ARGV[6]  grace in milliseconds, added to the expiry of the state
-- ARGV[7]  optional: hits to give back (bucket.Refund) before a peek; with
--          it, ARGV[4] is 0
--
-- Returns {allowed (0 or 1), remaining, reset_after µs, retry_after µs}.
--
-- The state is one string: a sliding window packs its newest slot start,
-- its nine slot counts, its idle second and its span (52 bytes), a fixed
-- window its start, count, idle second and span (20 bytes), a rated
-- algorithm its theoretical arrival time (8 bytes) relative to 2^52 µs, so
-- that it stays exact however far ahead of now it runs. Idle and span are
-- bucket.State's: the span notices a policy edit that changed the window.
-- The older layouts without them (44 and 12 bytes) are read as written under
-- another window and never idle. The key expires when the state equals a
-- fresh one (plus the grace).

local key = KEYS[1]
local alg = tonumber(ARGV[1])
local a = tonumber(ARGV[2])
local b = tonumber(ARGV[3])
local hits = tonumber(ARGV[4])
local t
if ARGV[5] == '' then
	local tm = redis.call('TIME')
	t = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
else
	t = tonumber(ARGV[5])
end
local grace = tonumber(ARGV[6])
local refund = 0
if ARGV[7] then refund = tonumber(ARGV[7]) end

local floor = math.floor
local E = 4503599627370496 -- 2^52
local peek = hits == 0
local over = hits < 0
local need = hits
if need < 1 then need = 1 end

-- bucket's ceilSecond: the Unix second at or after us, within uint32.
local function ceilsec(us)
	local sec = floor((us + 999999) / 1000000)
	if sec < 0 then return 0 end
	if sec > 4294967295 then return 4294967295 end
	return sec
end

-- The stored state, in the terms of bucket.State: T in absolute µs, the
-- slot counts c[0..8], the idle second (nil: not known) and the span (-1:
-- not known). A state written by another algorithm (the policy changed) is
-- read in the same terms as the Go store reads it.
local T = 0
local c = {[0] = 0, 0, 0, 0, 0, 0, 0, 0, 0}
local sidle, span = 0, 0
local rel = nil -- a rated state's relative TAT, exact
local v = redis.call('GET', key)
if v then
	local n = #v
	if n == 8 then
		rel = struct.unpack('<i8', v)
		T = rel + E
		sidle = ceilsec(T)
	elseif n == 20 then
		T, c[0], sidle, span = struct.unpack('<i8I4I4I4', v)
	elseif n == 52 then
		T, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], sidle, span = struct.unpack('<i8I4I4I4I4I4I4I4I4I4I4I4', v)
	elseif n == 12 then
		T, c[0] = struct.unpack('<i8I4', v)
		sidle, span = nil, -1
	elseif n == 44 then
		T, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8] = struct.unpack('<i8I4I4I4I4I4I4I4I4I4', v)
		sidle, span = nil, -1
	end
end
local sidle0, span0 = sidle, span
-- A refund of a counter that is not there gives nothing back, as the
-- memory store's.
if not v then refund = 0 end

-- Whether the stored state equals a fresh one at now.
local function idle_now()
	return sidle ~= nil and floor(t / 1000000) >= sidle
end

local function expire(state, idle)
	local ttl = math.ceil((idle - t) / 1000) + grace
	if ttl > 0 then
		redis.call('SET', key, state, 'PX', ttl)
	elseif v then
		redis.call('DEL', key)
	end
end

if alg == 1 or alg == 2 then
	-- GCRA in virtual-scheduling form; a token bucket is the same with
	-- capacity limit+burst. Times are relative to E.
	local interval, capacity = a, b
	local tr = t - E
	-- A fresh state has T = 0, like bucket.State{}: it matters before 1970.
	if rel == nil then rel = T - E end
	local tat = tr
	if rel > tat then tat = rel end
	local span = capacity * interval
	local allowed, retry = 0, 0
	local d = tat - tr -- tat - t, exact up to 2^53
	if d > 9007199254740992 then
		-- As bucket.Take: a TAT is taken as at most 2^53 µs ahead of now
		-- (only a run of policy edits leaves one further; it is denied).
		d = 9007199254740992
		tat = tr + d
	end
	if refund > 0 and d > 0 then
		-- bucket.Refund: the TAT moves back by refund intervals, to now at
		-- the earliest (refund * interval < d is exact).
		if refund * interval >= d then
			-- Everything back: the counter is deleted, and read as a
			-- fresh one (T = 0).
			redis.call('DEL', key)
			tat = tr
			if -E > tat then tat = -E end
			d = tat - tr
		else
			tat = tat - refund * interval
			d = tat - tr
			if tat == -E then
				-- A TAT of 0 is a fresh counter's (bucket.Refund): deleted.
				redis.call('DEL', key)
			else
				expire(struct.pack('<i8', tat), d + t)
			end
		end
	end
	if over then
		-- can never pass
	elseif need * interval <= span - d then -- exact at 2^53, where d + need * interval would round
		allowed = 1
		if not peek then
			tat = tat + hits * interval
			d = tat - tr
			expire(struct.pack('<i8', tat), d + t)
		end
	else
		retry = need * interval - (span - d)
	end
	local remaining = floor((span - d) / interval)
	if remaining < 0 then remaining = 0 end
	if over then retry = d end
	return {allowed, remaining, d, retry}
end

if alg == 3 then
	-- Fixed window: hits per epoch-aligned window, in c[0].
	local window, limit = a, b
	local T0, c0 = T, c[0]
	local count = c0
	local start = floor(t / window) * window
	local want = floor(window / 1000) % 4294967296
	if span ~= want or T % window ~= 0 then
		-- Fresh, of another algorithm, or written under another window size:
		-- unless idle, its hits are kept, in the current window.
		count = 0
		if not idle_now() then
			for i = 0, 8 do count = count + c[i] end
			if count > 4294967295 then count = 4294967295 end
		end
		local own = floor(T / window) * window
		T = start
		if own > T then T = own end
		span = want
	elseif start > T then
		T, count = start, 0
	end
	local given = refund > 0 and count > 0
	if given then
		count = count - refund
		if count < 0 then count = 0 end
	end
	local finish = T + window
	local allowed, retry = 0, 0
	if over then
	elseif count + need <= limit then
		allowed = 1
		count = count + hits
	else
		retry = finish - t
	end
	local remaining = limit - count
	if remaining < 0 then remaining = 0 end
	local reset, idle = 0, t
	if count > 0 then
		reset, idle = finish - t, finish
	end
	if over then retry = reset end
	sidle = ceilsec(idle)
	if (not peek or given) and (T ~= T0 or count ~= c0 or not v or #v ~= 20 or span ~= span0 or sidle ~= sidle0) then
		expire(struct.pack('<i8I4I4I4', T, count, sidle, span), idle)
	end
	return {allowed, remaining, reset, retry}
end

-- Sliding window: eight slots per window, counted in a ring of nine.
local width, limit = a, b
local T0 = T
local cur = floor(t / width)
local want = floor(width * 8 / 1000) % 4294967296
if span ~= want or T % width ~= 0 then
	-- Fresh, of another algorithm, or written under another window size:
	-- an idle state starts afresh; otherwise all its counted hits go into
	-- the current slot (or its own newest, if the clock went back).
	if idle_now() then
		T = 0
		for i = 0, 8 do c[i] = 0 end
	else
		local n = floor(T / width)
		if cur > n then n = cur end
		local sum = 0
		for i = 0, 8 do
			sum = sum + c[i]
			c[i] = 0
		end
		if sum > 4294967295 then sum = 4294967295 end
		c[n % 9] = sum
		T = n * width
	end
	span = want
end
local newest = floor(T / width)
if cur >= newest + 9 then
	for i = 0, 8 do c[i] = 0 end
elseif cur > newest then
	for k = newest + 1, cur do c[k % 9] = 0 end
else
	cur = newest -- the clock went back: count into the newest slot
end
T = cur * width
local added = false
if refund > 0 then
	-- bucket.Refund: the newest hits go back first.
	local left = refund
	for k = cur, cur - 8, -1 do
		if left <= 0 then break end
		local i = k % 9
		local g = c[i]
		if g > left then g = left end
		c[i] = c[i] - g
		left = left - g
		if g > 0 then added = true end
	end
end
local sum = 0
for i = 0, 8 do sum = sum + c[i] end
local allowed, retry = 0, 0
if over then
elseif sum + need <= limit then
	allowed = 1
	if not peek then
		local i = cur % 9
		c[i] = c[i] + hits
		sum = sum + hits
		added = true
	end
else
	-- Slot k leaves the counted set at the start of slot k+9.
	local rest = sum
	for k = cur - 8, cur do
		rest = rest - c[k % 9]
		if rest + need <= limit then
			retry = (k + 9) * width - t
			break
		end
	end
end
local remaining = limit - sum
if remaining < 0 then remaining = 0 end
local reset, idle = 0, t
for k = cur, cur - 8, -1 do
	if c[k % 9] ~= 0 then
		local finish = (k + 9) * width
		reset, idle = finish - t, finish
		break
	end
end
if over then retry = reset end
sidle = ceilsec(idle)
if (not peek or added) and (added or T ~= T0 or not v or #v ~= 52 or span ~= span0 or sidle ~= sidle0) then
	expire(struct.pack('<i8I4I4I4I4I4I4I4I4I4I4I4', T, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], sidle, span), idle)
end
return {allowed, remaining, reset, retry}

-- Writes an ImageFolder of small real JPEGs for the loader benchmark: the
-- 10,000 Fashion-MNIST test images, padded to 32x32, tinted per class to RGB,
-- JPEG quality 90, in ROOT/<class name>/<index>.jpg. Skips the work when
-- ROOT already holds them.  Usage: nnrun scripts/bench/make_image_folder.lua ROOT [DATA_DIR]
local nnr = require "nnr"
local data = nnr.data
local root = assert(arg[1], "usage: make_image_folder.lua ROOT [DATA_DIR]")
local dir = arg[2] or "/usr/share/datasets/fashion-mnist"
local names = { "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot" }
local done = io.open(root .. "/boot/9999.jpg") or io.open(root .. "/.complete")
if done then done:close(); print("exists: " .. root); return end
local x = nnr.load_idx(dir .. "/t10k-images-idx3-ubyte.gz")
local y = nnr.load_idx(dir .. "/t10k-labels-idx1-ubyte.gz")
for _, n in ipairs(names) do os.execute("mkdir -p " .. root .. "/" .. n) end
local canvas = nnr.zeros(3, 32, 32, { dtype = "u8" })
for i = 1, x:size(1) do
  local c = y[i] + 1
  local img = x[i]:float()
  for ch = 1, 3 do
    local tint = 0.55 + 0.45 * ((c * (ch + 2)) % 7) / 6
    canvas[ch]:narrow(1, 3, 28):narrow(2, 3, 28):copy_((img * tint):byte())
  end
  data.save_image(string.format("%s/%s/%d.jpg", root, names[c], i - 1), canvas, 90)
end
io.open(root .. "/.complete", "w"):close()
print("wrote " .. x:size(1) .. " images under " .. root)

#pragma once
/// @file detail/journal_format.hpp
/// @brief The text of a journal line: JSON string escaping that keeps every byte (invalid UTF-8
/// as lone surrogates U+DC80..U+DCFF, as Python's "surrogateescape" does), and a strict reader of
/// the flat JSON objects a journal holds.

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace tasktree::detail::journal_format {

/// The length of the valid UTF-8 sequence at the start of `text`, or 0 if it is not one.
inline std::size_t utf8_sequence(std::string_view text) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  std::uint32_t code = 0;
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    code = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    code = lead & 0x0Fu;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    code = lead & 0x07u;
  } else {
    return 0;
  }
  if (text.size() < length) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0u) != 0x80u) return 0;
    code = (code << 6) | (byte(i) & 0x3Fu);
  }
  if ((length == 3 && code < 0x800) || (length == 4 && (code < 0x10000 || code > 0x10FFFF))) return 0;  // overlong
  if (code >= 0xD800 && code <= 0xDFFF) return 0;  // a surrogate is not a character
  return length;
}

/// True for the bytes a JSON string holds as they are: printable ASCII other than `"` and `\`.
/// (Bytes from 0x80 up are copied too when they form valid UTF-8; see `write_string`.)
inline constexpr auto plain_bytes = [] {
  struct Table {
    bool plain[256] = {};
  } table;
  for (int c = 0x20; c < 0x80; ++c) table.plain[c] = c != '"' && c != '\\';
  return table;
}();

/// True if one of the 8 bytes of `word` is not plain: below 0x20, from 0x80 up, `"` or `\\` (each
/// test is exact about whether some byte matches, which is all this asks).
constexpr bool has_special_byte(std::uint64_t word) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101u;
  constexpr std::uint64_t highs = 0x8080808080808080u;
  const auto has_zero = [&](std::uint64_t v) { return (v - ones) & ~v & highs; };
  return (((word - ones * 0x20) & ~word & highs) | (word & highs) | has_zero(word ^ (ones * '"')) |
          has_zero(word ^ (ones * '\\'))) != 0;
}

/// The most bytes `write_string` writes for a text of `size` bytes: the quotes and six bytes
/// (`\udcXX`) per byte.
constexpr std::size_t max_string_size(std::size_t size) noexcept { return 2 + 6 * size; }

/// Writes `text` as a JSON string (with the quotes) at `out`, which has room for
/// `max_string_size(text.size())` bytes; returns the end of what it wrote. Bytes that are not valid
/// UTF-8 become `\udcXX`, which `read_string` turns back into the byte. Runs of plain bytes are
/// copied whole, and looked at eight at a time.
inline char* write_string(char* out, std::string_view text) noexcept {
  static constexpr char hex[] = "0123456789abcdef";
  *out++ = '"';
  std::size_t plain = 0;  // start of the run of bytes copied as they are
  std::size_t i = 0;
  const auto flush = [&] {
    if (i == plain) return;  // (an empty view's data may be null, which memcpy must not see)
    std::memcpy(out, text.data() + plain, i - plain);
    out += i - plain;
  };
  while (i < text.size()) {
    if (i + 8 <= text.size()) {
      std::uint64_t word = 0;
      std::memcpy(&word, text.data() + i, 8);
      if (!has_special_byte(word)) {
        i += 8;
        continue;
      }
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (plain_bytes.plain[c]) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (const std::size_t length = utf8_sequence(text.substr(i)); length > 0) {
        i += length;
        continue;
      }
    }
    flush();
    *out++ = '\\';
    if (c == '"' || c == '\\') {
      *out++ = static_cast<char>(c);
    } else if (c == '\n') {
      *out++ = 'n';
    } else if (c == '\t') {
      *out++ = 't';
    } else {  // another control byte (\u00XX), or a byte of invalid UTF-8 (\udcXX)
      std::memcpy(out, c < 0x20 ? "u00" : "udc", 3);
      out += 3;
      *out++ = hex[c >> 4];
      *out++ = hex[c & 0xFu];
    }
    ++i;
    plain = i;
  }
  flush();
  *out++ = '"';
  return out;
}

/// Appends `text` as a JSON string (with the quotes); see `write_string`.
inline void append_string(std::string& out, std::string_view text) {
  const std::size_t size = out.size();
  out.resize(size + max_string_size(text.size()));
  char* const end = write_string(out.data() + size, text);
  out.resize(static_cast<std::size_t>(end - out.data()));
}

/// "00" to "99", for writing numbers two digits at a time.
inline constexpr auto digit_pairs = [] {
  struct Table {
    char pairs[200] = {};
  } table;
  for (int i = 0; i < 100; ++i) {
    table.pairs[2 * i] = static_cast<char>('0' + i / 10);
    table.pairs[2 * i + 1] = static_cast<char>('0' + i % 10);
  }
  return table;
}();

/// The most bytes `write_integer` writes.
inline constexpr std::size_t max_integer_size = 20;

/// Writes `value` in decimal at `out`; returns the end.
inline char* write_integer(char* out, std::int64_t value) noexcept {
  return std::to_chars(out, out + max_integer_size, value).ptr;
}

/// The most bytes `write_micros` writes.
inline constexpr std::size_t max_micros_size = max_integer_size + 7;

/// Writes `micros` (0 to 999,999) as the decimals of a second, `.000345`, at `out`; returns the end.
inline char* write_fraction(char* out, std::int64_t micros) noexcept {
  auto fraction = static_cast<std::uint32_t>(micros);
  *out = '.';
  for (int pair = 2; pair >= 0; --pair) {  // the fraction's digits, two at a time from the right
    std::memcpy(out + 1 + 2 * pair, digit_pairs.pairs + 2 * (fraction % 100), 2);
    fraction /= 100;
  }
  return out + 7;
}

/// Writes `micros` (not negative) as seconds with six decimals, `12.000345`, at `out`; returns
/// the end.
inline char* write_micros(char* out, std::int64_t micros) noexcept {
  return write_fraction(write_integer(out, micros / 1'000'000), micros % 1'000'000);
}

/// A value of a flat JSON object.
struct Value {
  enum Kind { string, number, boolean, null } kind = null;
  std::string text{};
  double number_value = 0;
  bool bool_value = false;
};

/// One journal line as keys and values; `std::nullopt` if it is not a flat JSON object (`error`
/// then says why).
using Object = std::map<std::string, Value, std::less<>>;

class LineReader {
 public:
  explicit LineReader(std::string_view line) noexcept : rest_(line) {}

  std::optional<Object> object(std::string& error) {
    Object result;
    skip_space();
    if (!take('{')) return fail(error, "it does not start with '{'");
    skip_space();
    if (take('}')) return finish(result, error);
    while (true) {
      skip_space();
      std::string key;
      if (!read_string(key)) return fail(error, "a key is not a string");
      skip_space();
      if (!take(':')) return fail(error, "no ':' after a key");
      skip_space();
      Value value;
      if (!read_value(value)) return fail(error, "a value is not a string, number, true, false or null");
      result.insert_or_assign(std::move(key), std::move(value));
      skip_space();
      if (take(',')) continue;
      if (take('}')) return finish(result, error);
      return fail(error, "no ',' or '}' after a value");
    }
  }

 private:
  std::optional<Object> finish(Object& result, std::string& error) {
    skip_space();
    if (!rest_.empty()) return fail(error, "text after the closing '}'");
    return std::move(result);
  }
  static std::optional<Object> fail(std::string& error, std::string_view why) {
    error = why;
    return std::nullopt;
  }
  void skip_space() noexcept {
    while (!rest_.empty() && (rest_.front() == ' ' || rest_.front() == '\t' || rest_.front() == '\r')) {
      rest_.remove_prefix(1);
    }
  }
  bool take(char c) noexcept {
    if (rest_.empty() || rest_.front() != c) return false;
    rest_.remove_prefix(1);
    return true;
  }
  bool take_word(std::string_view word) noexcept {
    if (!rest_.starts_with(word)) return false;
    rest_.remove_prefix(word.size());
    return true;
  }
  bool read_value(Value& value) {
    if (!rest_.empty() && rest_.front() == '"') {
      value.kind = Value::string;
      return read_string(value.text);
    }
    if (take_word("true")) {
      value.kind = Value::boolean;
      value.bool_value = true;
      return true;
    }
    if (take_word("false")) {
      value.kind = Value::boolean;
      return true;
    }
    if (take_word("null")) return true;
    const char* begin = rest_.data();
    const char* end = rest_.data() + rest_.size();
    const auto [at, error] = std::from_chars(begin, end, value.number_value);
    if (error != std::errc() || at == begin) return false;
    value.kind = Value::number;
    rest_.remove_prefix(static_cast<std::size_t>(at - begin));
    return true;
  }
  bool read_hex4(std::uint32_t& code) noexcept {
    if (rest_.size() < 4) return false;
    code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = rest_[static_cast<std::size_t>(i)];
      code <<= 4;
      if (c >= '0' && c <= '9') {
        code |= static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        code |= static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        code |= static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    rest_.remove_prefix(4);
    return true;
  }
  static void append_utf8(std::string& out, std::uint32_t code) {
    if (code < 0x80) {
      out.push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (code >> 6)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (code >> 12)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (code >> 18)));
      out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
  }
  bool read_string(std::string& out) {
    if (!take('"')) return false;
    out.clear();
    while (!rest_.empty()) {
      const char c = rest_.front();
      rest_.remove_prefix(1);
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (rest_.empty()) return false;
      const char escape = rest_.front();
      rest_.remove_prefix(1);
      switch (escape) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          std::uint32_t code = 0;
          if (!read_hex4(code)) return false;
          if (code >= 0xDC80 && code <= 0xDCFF) {  // an escaped byte of invalid UTF-8
            out.push_back(static_cast<char>(code - 0xDC00));
          } else if (code >= 0xD800 && code <= 0xDBFF) {
            std::uint32_t low = 0;
            if (!take('\\') || !take('u') || !read_hex4(low) || low < 0xDC00 || low > 0xDFFF) return false;
            append_utf8(out, 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00));
          } else if (code >= 0xDC00 && code <= 0xDFFF) {
            return false;
          } else {
            append_utf8(out, code);
          }
          break;
        }
        default: return false;
      }
    }
    return false;  // no closing quote
  }

  std::string_view rest_;
};

}  // namespace tasktree::detail::journal_format

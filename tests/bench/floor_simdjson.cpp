/*
 * floor_simdjson: floor_cjson.c with simdjson's On Demand API (Debian's
 * libsimdjson-dev): reads every page file named in a list file, iterates the
 * records of each page and touches every record's raw span (what a data
 * path working on the page's bytes would need), then moves on.
 *
 *   floor_simdjson LIST_FILE   prints "pages <n> bytes <n> records <n>"
 *
 * Build with -march=native (bench_side_by_side.py does): On Demand uses
 * the kernels the compiler targets, and without it that is the portable
 * fallback, several times slower than what the machine can do.
 *
 * A benchmark tool, not part of the product.
 */
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include <simdjson.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: floor_simdjson LIST_FILE\n");
        return 2;
    }
    std::ifstream list(argv[1]);
    if (!list) {
        std::perror(argv[1]);
        return 1;
    }
    simdjson::ondemand::parser parser;
    size_t pages = 0, bytes = 0, records = 0, span = 0;
    std::string path;
    while (std::getline(list, path)) {
        if (path.empty())
            continue;
        simdjson::padded_string page;
        if (simdjson::padded_string::load(path).get(page)) {
            std::fprintf(stderr, "%s: cannot read\n", path.c_str());
            return 1;
        }
        simdjson::ondemand::document doc;
        simdjson::ondemand::array data;
        if (parser.iterate(page).get(doc) || doc["data"].get_array().get(data)) {
            std::fprintf(stderr, "%s: not a page\n", path.c_str());
            return 1;
        }
        for (auto rec : data) {
            simdjson::ondemand::object obj;
            std::string_view raw;
            /* raw_json() consumes the record: a full validation of its
             * bytes, the least a hot path must do. */
            if (rec.get_object().get(obj) || obj.raw_json().get(raw)) {
                std::fprintf(stderr, "%s: bad record\n", path.c_str());
                return 1;
            }
            span += raw.size();
            records++;
        }
        pages++;
        bytes += page.size();
    }
    std::printf("pages %zu bytes %zu records %zu span %zu\n", pages, bytes, records, span);
    return 0;
}

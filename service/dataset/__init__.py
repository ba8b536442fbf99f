"""Dataset quality: what turns stored stories into a dataset a researcher can train on.

Owns text normalisation, exact hashes and MinHash/LSH (`minhash`, pure: numpy and hashlib,
no database), dedup orchestration (`dedup`), import, its formats and record layouts
(`importer`, `import_formats`, `import_records`), export with its streaming writer, shards and
dataset card (`exporter`, `export_writer`, `export_shards`, `export_card`), benchmark
decontamination (`decontam`) and the
`import` / `dedup` / `export` commands (`cli`). It may import `service.store` and the root
modules (settings, db); never `service.work`, `service.api` or `service.dashboard`.
`service.store` may import `minhash` alone, because the band index it queries is defined by
those pure functions. Nothing is imported here, so that import pulls in nothing else.
"""

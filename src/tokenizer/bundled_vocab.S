/* Embeds the standard CLIP vocabulary files into sd_tokenizer as read-only data.
   SD_VOCAB_JSON_PATH / SD_MERGES_TXT_PATH are absolute paths (quoted strings) passed by
   src/tokenizer/CMakeLists.txt; bundled_vocab.cc reads the bytes between the symbols. */

  .section .rodata.sd_bundled_vocab, "a", @progbits

  .global sd_bundled_vocab_json_start
  .global sd_bundled_vocab_json_end
  .balign 16
sd_bundled_vocab_json_start:
  .incbin SD_VOCAB_JSON_PATH
sd_bundled_vocab_json_end:
  .byte 0

  .global sd_bundled_merges_txt_start
  .global sd_bundled_merges_txt_end
  .balign 16
sd_bundled_merges_txt_start:
  .incbin SD_MERGES_TXT_PATH
sd_bundled_merges_txt_end:
  .byte 0

  /* No executable stack needed. */
  .section .note.GNU-stack, "", @progbits

declare module 'js-hcl-parser' { const hcl: { parse(text: string): string; stringify(json: string): string }; export default hcl; }
